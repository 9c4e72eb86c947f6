"""Pure builders of a bucket's command sandbox: its OCI config, its name, its runtime argv.

Nothing here runs anything (argv builders are pure and tested without a system).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sandbox import oci

# Where things live inside the sandbox.
WORKSPACE = "/workspace"
DAEMON_PATH = "/opt/weldr/sandboxd.py"
# On the host, in the sandbox's bundle (root's, mode 0700); never inside the sandbox.
SOCKET_NAME = "sandboxd.sock"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_name(*, instance_id: str, bucket: str) -> str:
    """Machine-global, so it carries the instance id (two agents on one machine never collide)."""
    return f"weldr-{instance_id}-exec-{re.sub(r'[^a-z0-9-]', '-', bucket.lower())}"


def sandbox_spec(*, name: str, rootfs: Path, workspace: Path, daemon: Path, uid: int,
                 memory_mb: int, cpus: float, pids: int, hostname: str,
                 netns: Path | None = None) -> dict[str, Any]:
    """The exec sandbox: the common sandbox (`oci.config`) with the workspace read-write at
    /workspace and the command daemon as its one process.

    What differs from a preview, and why: the daemon gets one user namespace of its own (it
    clones each command as PID 1 of a new PID namespace, and refuses further user namespaces
    itself before serving: sandboxd.py), and /proc is unmasked so that it can mount a fresh
    one per command. Its control socket is not in the sandbox at all: the agent binds it on
    the host and hands it over as the daemon's stdin (`bucket.BucketSandbox.start`).
    """
    return oci.config(oci.SandboxConfig(
        name=name,
        # -I: ignore the environment and user site; -S: no site import (faster start).
        args=["/usr/bin/python3", "-I", "-S", DAEMON_PATH],
        env=[f"PATH={SANDBOX_PATH}", "LANG=C.UTF-8", "HOME=/tmp"],
        cwd=WORKSPACE, hostname=hostname, uid=uid,
        memory_mb=memory_mb, cpus=cpus, pids=pids, tmp_mb=max(64, memory_mb // 2),
        mounts=[oci.bind(workspace, WORKSPACE, readonly=False),
                oci.bind(daemon, DAEMON_PATH, readonly=True)],
        # The preview sandbox's pooled netns (veth + firewall: no agent, no host, no other
        # sandbox; outbound only with SANDBOX_OUTBOUND), or a fresh empty one.
        netns=netns,
        daemon_user_namespace=True,
    ), rootfs=rootfs)


def rootfs_mountpoints(rootfs: Path) -> list[Path]:
    """Directories and files the sandbox's read-only root must already contain."""
    return [rootfs / "workspace", rootfs / "opt" / "weldr", rootfs / "dev", rootfs / "proc",
            rootfs / "tmp", rootfs / "etc"]


def runtime_argv(runtime: str, *, root: Path, verb: str, name: str,
                 bundle: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """`runc --root R run -d --bundle B NAME`, `runc --root R delete --force NAME`, ..."""
    argv = [runtime, "--root", str(root), verb, *extra]
    if bundle is not None:
        argv += ["--bundle", str(bundle)]
    return [*argv, name]
