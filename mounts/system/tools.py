"""How JuiceFS and Litestream reach S3 (their environments), and the tag every daemon of a
mount carries.
"""

from __future__ import annotations

from django.conf import settings

from mounts.system.volume import Paths

# Every daemon of a mount carries this variable, "<kind>:<mount point>": /proc/<pid>/environ
# identifies it for certain (JuiceFS rewrites and truncates its argv in /proc/<pid>/cmdline).
TAG_VARIABLE = "WELDR_MOUNT_DAEMON"
JUICEFS = "juicefs"
LITESTREAM = "litestream"
# Set by juicefs's watchdog in the environment of the server it starts (cmd/mount.go): a
# `juicefs mount` that finds it runs as the server directly.
JUICEFS_SUPERVISOR = "JFS_SUPERVISOR"


def bucket_url(bucket: str) -> str:
    # Path-style: works with Tigris, MinIO and `rclone serve s3` alike.
    return f"{settings.S3_ENDPOINT}/{bucket}"


def daemon_tag(p: Paths, kind: str) -> str:
    return f"{kind}:{p.mount_point}"


def juicefs_env(buffer_size_mb: int | None = None) -> dict[str, str]:
    """Environment for juicefs: the keys as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY only,
    nothing inherited.

    Never ACCESS_KEY / SECRET_KEY: `juicefs format` stores those in the volume's settings, which
    Litestream replicates into the bucket (its "encrypted" secret is sealed with a key derived
    from the volume's UUID, stored beside it). With no key in the settings, JuiceFS's S3 client
    takes them from this environment at every run (docs/mounts.md, "Secrets at rest").
    """
    from weldr_agent import s3

    env = s3.tool_env()
    if buffer_size_mb is not None:
        env["GOMEMLIMIT"] = f"{buffer_size_mb + settings.JUICEFS_MEMORY_OVERHEAD_MB}MiB"
        if not settings.JUICEFS_WATCHDOG:
            # What juicefs's watchdog sets for the server it starts: this process is then the
            # server itself, with no watchdog above it (JUICEFS_WATCHDOG).
            env[JUICEFS_SUPERVISOR] = "1"
    return env


def litestream_env() -> dict[str, str]:
    from weldr_agent import s3

    env = s3.tool_env()  # keys explicit, and no AWS_CA_BUNDLE (Litestream 0.5.17 refuses it)
    env["GOMEMLIMIT"] = f"{settings.LITESTREAM_MEMORY_LIMIT_MB}MiB"
    return env
