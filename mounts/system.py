"""Pure builders for the mount path: paths, budgets, argv, environments and configs.

Nothing here runs a command or touches the disk (apart from reading the Litestream template):
`mounts/steps.py` runs what these functions describe, and tests/mounts/test_system.py checks
them without running anything. The JuiceFS options live in `juicefs_mount_argv` — the one
place to change when tuning (the `perf` branch measures them).
"""

from __future__ import annotations

import os
import re
import shlex
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

# Data lives under <bucket>/<VOLUME_NAME>/ (JuiceFS's prefix); the Litestream replica and the
# durability marker live beside it, outside that prefix, because `juicefs format` refuses a
# non-empty prefix — the guard against formatting over a volume whose replica vanished
# (storage hazard 9, docs/mounts.md).
VOLUME_NAME = "workspace"
REPLICA_PATH = "weldr-meta/litestream"
DURABLE_MARKER_KEY = "weldr-meta/durable-at"
# The volume's layout (files | image), written when the volume is made: the sandbox has no S3
# credentials and JuiceFS writes only under VOLUME_NAME/, so nothing in a workspace can change
# it, and it survives the machine. Never inferred from the files (docs/mounts.md, "Layouts").
LAYOUT_KEY = "weldr-meta/layout"
# The bucket's lease (mounts/lease.py, docs/mounts.md "One writer per bucket"): which machine
# writes the bucket. Released, it stays as the record of the last writer.
LEASE_KEY = "weldr-meta/lease"
# Where the conditional-write probe writes its throwaway objects.
LEASE_PROBE_PREFIX = "weldr-meta/lease-probe-"
# `juicefs format` writes this object; its absence means the volume is gone.
VOLUME_UUID_KEY = f"{VOLUME_NAME}/juicefs_uuid"
# After a metadata restore the block-ID counter jumps this far ahead: object keys derive from
# it and an older counter would reissue IDs whose objects exist already (storage hazard 3,
# docs/mounts.md). Ten
# million is more chunks than a 2-core machine can create in the restore window.
CHUNK_COUNTER_ADVANCE = 10_000_000
# A JuiceFS root directory is inode 1: the mount answers when stat() says so.
ROOT_INODE = 1
TEMPLATE = Path(__file__).resolve().parent.parent / "scripts" / "litestream-template.yml"
# Workspace layouts (docs/mounts.md, "Layouts"): the workspace's files are JuiceFS's files, or
# they live in an ext4 filesystem stored as ONE sparse file inside the JuiceFS volume and
# loop-mounted (JuiceFS then sees block writes to one file instead of ~13 FUSE round trips and
# ~11 metadata transactions per file: docs/performance.md).
FILES = "files"
IMAGE = "image"
LAYOUTS = (FILES, IMAGE)
# An image volume's JuiceFS root holds this root-only directory and the image in it. With the
# files layout the JuiceFS root IS the workspace, so the sandbox can make the same names: their
# presence never decides the layout (LAYOUT_KEY does; `legacy_layout` for older volumes).
IMAGE_DIR = ".weldr"
IMAGE_NAME = "workspace.ext4"
_STAGED_BLOCK = re.compile(r"^\d+_\d+_\d+$")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)?$")


@dataclass(frozen=True)
class Paths:
    """Where one bucket's files live (docs/mounts.md)."""

    bucket: str
    meta_db: Path
    cache_dir: Path
    juicefs_log: Path
    litestream_config: Path
    litestream_log: Path
    litestream_socket: Path
    lock: Path
    # The workspace, WORKSPACE_BASE/{bucket}: JuiceFS's mount (files) or the ext4's (image).
    mount_point: Path
    # Where JuiceFS is mounted for the image layout: internal, never shown to the sandbox.
    volume_dir: Path
    layout: str = FILES

    @property
    def meta_url(self) -> str:
        return meta_url(self.meta_db)

    @property
    def volume_point(self) -> Path:
        """Where JuiceFS is mounted for this layout."""
        return self.volume_dir if self.layout == IMAGE else self.mount_point

    @property
    def image(self) -> Path:
        """The ext4 image inside the JuiceFS volume (image layout)."""
        return self.volume_dir / IMAGE_DIR / IMAGE_NAME


# A unix socket's path must fit sun_path (108 bytes with its NUL).
UNIX_SOCKET_PATH_MAX = 107


def socket_path(directory: Path, name: str) -> Path:
    """`directory/name`, or a short per-agent path under /run when that would not fit."""
    preferred = directory / name
    if len(os.fsencode(str(preferred))) <= UNIX_SOCKET_PATH_MAX:
        return preferred
    return Path("/run/weldr-sockets") / f"{settings.INSTANCE_ID}-{name}"


def paths(bucket: str, layout: str = FILES) -> Paths:
    vol = settings.WELDR_ENV_VOL
    run = settings.RUNTIME_DIR / "mounts"
    return Paths(
        bucket=bucket,
        meta_db=vol / "meta" / f"{bucket}.db",
        cache_dir=vol / "cache" / bucket,
        juicefs_log=vol / f"juicefs-{bucket}.log",
        litestream_config=vol / f"litestream-{bucket}.yml",
        litestream_log=vol / f"litestream-{bucket}.log",
        # Control socket and lock are runtime objects: tmpfs, gone after a reboot.
        litestream_socket=socket_path(run, f"litestream-{bucket}.sock"),
        lock=run / f"{bucket}.lock",
        mount_point=settings.WORKSPACE_BASE / bucket,
        volume_dir=vol / "volumes" / bucket,
        layout=layout,
    )


def meta_url(db: Path) -> str:
    # WAL journal, NORMAL sync and a 64 MB page cache (the design's SQLite settings).
    return f"sqlite3://{db}?_journal=WAL&_sync=NORMAL&_cache_size=-65536"


def duration_seconds(value: str) -> float:
    """Seconds in a duration like 500ms, 30s, 5m, 1h or a bare number of seconds."""
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a duration: {value!r}")
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


# ---------------------------------------------------------------------------------------------
# Budget
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    cache_size_mb: int
    buffer_size_mb: int


def budget(active: int) -> Budget:
    """Cache and buffer for a mount when `active` mounts (this one included) share the machine.

    Cache: the total minus the metadata and overhead reserves, split evenly. Buffer: a pool split
    evenly and clamped to [BUFFER_MIN_MB, BUFFER_MAX_MB]. CACHE_SIZE_MB / BUFFER_SIZE_MB override.
    """
    active = max(active, 1)
    if settings.CACHE_SIZE_MB is not None:
        cache = settings.CACHE_SIZE_MB
    else:
        spare = settings.CACHE_TOTAL_MB - settings.CACHE_RESERVED_META_MB \
            - settings.CACHE_RESERVED_OVERHEAD_MB
        cache = max(spare // active, 64)
    if settings.BUFFER_SIZE_MB is not None:
        buffer = settings.BUFFER_SIZE_MB
    else:
        buffer = min(max(settings.BUFFER_POOL_MB // active, settings.BUFFER_MIN_MB),
                     settings.BUFFER_MAX_MB)
    return Budget(cache_size_mb=cache, buffer_size_mb=buffer)


def free_space_ratio(volume_bytes: int) -> float:
    """The free-space ratio for a mount's cache on a volume of `volume_bytes`.

    Staging is bounded only by free space, down to free-space-ratio / 2 (storage hazard 5,
    docs/mounts.md). So the
    ratio is raised until half of it covers the metadata reserve: however much one mount
    stages, that much stays free for every bucket's metadata database and the other mounts'
    small writes. FREE_SPACE_RATIO is the floor.
    """
    if volume_bytes <= 0:
        return settings.FREE_SPACE_RATIO
    reserve = settings.CACHE_RESERVED_META_MB * 1024 * 1024
    needed = min(2 * reserve / volume_bytes, 0.5)
    return round(max(settings.FREE_SPACE_RATIO, needed), 3)


# ---------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------


def bucket_url(bucket: str) -> str:
    # Path-style: works with Tigris, MinIO and `rclone serve s3` alike.
    return f"{settings.S3_ENDPOINT}/{bucket}"


# Every daemon of a mount carries this variable, "<kind>:<mount point>": /proc/<pid>/environ
# identifies it for certain (JuiceFS rewrites and truncates its argv in /proc/<pid>/cmdline).
TAG_VARIABLE = "WELDR_MOUNT_DAEMON"
JUICEFS = "juicefs"
LITESTREAM = "litestream"


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
    return env


def litestream_env() -> dict[str, str]:
    from weldr_agent import s3

    env = s3.tool_env()  # keys explicit, and no AWS_CA_BUNDLE (Litestream 0.5.17 refuses it)
    env["GOMEMLIMIT"] = f"{settings.LITESTREAM_MEMORY_LIMIT_MB}MiB"
    return env


# ---------------------------------------------------------------------------------------------
# JuiceFS
# ---------------------------------------------------------------------------------------------


# The volume's settings (jfs_setting 'format') that hold object-storage credentials. EncryptKey
# (data encryption) is not one: removing it would make an encrypted volume unreadable.
FORMAT_SECRETS = ("AccessKey", "SecretKey", "SessionToken")


def format_without_secrets(fmt: dict[str, Any]) -> dict[str, Any]:
    """A volume's format settings without the S3 credentials an older agent let JuiceFS store.

    KeyEncrypted goes with them unless EncryptKey is still there (it is encrypted the same way).
    """
    cleaned = {key: value for key, value in fmt.items() if key not in FORMAT_SECRETS}
    if not cleaned.get("EncryptKey"):
        cleaned.pop("KeyEncrypted", None)
    return cleaned


def juicefs_format_argv(juicefs: str, p: Paths) -> list[str]:
    # --no-update: never change an existing volume's settings. `format` itself refuses a
    # non-empty prefix, the last guard against formatting over lost metadata.
    return [
        juicefs, "format", "--storage", "s3", "--bucket", bucket_url(p.bucket),
        "--trash-days", str(settings.TRASH_DAYS), "--no-update", p.meta_url, VOLUME_NAME,
    ]


def verify_cache_value(value: str) -> str:
    """JuiceFS's checksum level for VERIFY_CACHE (design names sha256/md5/off)."""
    return {"off": "none", "none": "none", "sha256": "full", "md5": "full"}.get(value, value)


def juicefs_mount_argv(juicefs: str, p: Paths, b: Budget, *, free_ratio: float) -> list[str]:
    """`juicefs mount` in the foreground (we own its pid and its log) with the design's options.

    Every value comes from settings (the design's environment overrides); FS_MOUNT_OPTIONS is
    appended last so an operator's option wins.
    """
    argv = [
        juicefs, "mount", p.meta_url, str(p.volume_point),
        "--no-usage-report", "--no-syslog",
        # The endpoint is given at every mount so a changed S3_ENDPOINT is honoured.
        "--storage", "s3", "--bucket", bucket_url(p.bucket),
        "--cache-dir", str(p.cache_dir),
        "--cache-size", str(b.cache_size_mb),
        "--free-space-ratio", str(free_ratio),
        "--buffer-size", str(b.buffer_size_mb),
        "--attr-cache", str(settings.ATTR_CACHE_TTL),
        "--entry-cache", str(settings.ENTRY_CACHE_TTL),
        "--dir-entry-cache", str(settings.DIR_ENTRY_CACHE_TTL),
        "--open-cache", str(settings.OPEN_CACHE_TTL),
        "--max-readahead", str(settings.MAX_READAHEAD_MB),
        "--prefetch", str(settings.PREFETCH),
        "--verify-cache-checksum", verify_cache_value(settings.VERIFY_CACHE),
        "--max-uploads", str(settings.MAX_UPLOADS),
        # Litestream already ships the metadata continuously; the hourly full dump JuiceFS
        # does by default costs memory and CPU for nothing (storage hazard 7, docs/mounts.md).
        "--backup-meta", "0",
        # A private metrics port per mount: the default 9567 would collide between mounts.
        "--metrics", "127.0.0.1:0",
    ]
    if settings.WRITEBACK_ENABLED:
        argv += ["--writeback", "--upload-delay", settings.UPLOAD_DELAY]
    return argv + fuse_options_merge(shlex.split(settings.FS_MOUNT_OPTIONS))


def fuse_options_merge(extra: list[str]) -> list[str]:
    """`extra` with its FUSE options (`-o a,b`) joined to JUICEFS_FUSE_OPTIONS in one `-o`:
    juicefs keeps only the last `-o`, and an operator's must not drop nosuid,nodev."""
    options, rest, index = [JUICEFS_FUSE_OPTIONS], [], 0
    while index < len(extra):
        item = extra[index]
        if item == "-o" and index + 1 < len(extra):
            options.append(extra[index + 1])
            index += 2
            continue
        if item.startswith("-o="):
            options.append(item[len("-o="):])
        else:
            rest.append(item)
        index += 1
    return [*rest, "-o", ",".join(options)]


# ---------------------------------------------------------------------------------------------
# Image layout: an ext4 filesystem in one sparse file of the JuiceFS volume
# ---------------------------------------------------------------------------------------------

# ext4 mount options:
# - noatime: a read must not become a block write to S3;
# - errors=remount-ro: when the image's I/O fails (JuiceFS died under the loop device) ext4
#   stops writing instead of piling damage on damage; reconcile sees the read-only state;
# - nodiscard: no online discard. Every freed extent would become a hole punched in the image
#   (a JuiceFS metadata transaction) at each journal commit, during `rm -rf node_modules`;
#   fstrim at sync and unmount releases the same space in one batch.
# - nosuid,nodev: the image is a file of the bucket; whatever it holds (a setuid-root binary, a
#   device node), the host gives it no meaning.
EXT4_MOUNT_OPTIONS = "noatime,errors=remount-ro,nodiscard,nosuid,nodev"
# JuiceFS's FUSE mounts (the files workspace, the image layout's volume), for the same reason.
JUICEFS_FUSE_OPTIONS = "nosuid,nodev"


def layout_parse(text: str) -> str:
    """The layout recorded at LAYOUT_KEY; ValueError for anything else."""
    value = text.strip()
    if value not in LAYOUTS:
        raise ValueError(f"not a layout: {value[:40]!r}")
    return value


# JuiceFS's inode types (jfs_node.type) and the root-only marks of what the agent made.
NODE_FILE, NODE_DIR = 1, 2


@dataclass(frozen=True)
class Node:
    """One jfs_node row: type, permission bits, owner."""

    kind: int
    mode: int
    uid: int
    gid: int


def legacy_layout(root_names: set[str], weldr: Node | None, image: Node | None) -> str | None:
    """The layout of a volume made before LAYOUT_KEY existed, from its metadata, once; None when
    its root is empty (a new volume: the request or the setting decides).

    IMAGE only when nothing but the agent can have made the image: the root holds nothing but
    `.weldr`, a directory owned by root with mode 0700 (as `image_create` makes it, whatever
    the umask), holding a regular file owned by root. The sandbox (uid 1000, no CAP_CHOWN)
    cannot make anything owned by root, nor write in a root-owned 0700 directory (JuiceFS
    checks permissions in the kernel: default_permissions), and the files API creates
    everything as uid 1000: a files workspace where anyone made `.weldr/workspace.ext4`
    stays FILES.
    """
    names = root_names - {".trash"}
    if not names:
        return None
    made_by_agent = (names == {IMAGE_DIR} and weldr is not None and image is not None
                     and weldr.kind == NODE_DIR and weldr.uid == 0 and weldr.gid == 0
                     and weldr.mode & 0o7777 == 0o700
                     and image.kind == NODE_FILE and image.uid == 0)
    return IMAGE if made_by_agent else FILES


def mkfs_ext4_argv(image: Path, *, label: str) -> list[str]:
    """mkfs for a new image: a journaled ext4 (crash consistency rests on its journal).

    -m 0: no blocks reserved for root (a workspace, not a system disk: 5 % of 20 GB is 1 GB).
    lazy_itable_init / lazy_journal_init: do not write zeros over inode tables and the journal
    (the file is sparse and reads zeros there anyway); with mke2fs's discard of a regular file
    (punching holes, which JuiceFS supports) the inode tables are marked zeroed, so the kernel
    does not zero them in the background after mounting either (measured: every group is
    ITABLE_ZEROED, mkfs of a 20 GB image takes 0.3 s and writes 4 MB). Metadata checksums stay
    on (Debian's default) so e2fsck can tell damage from data; -e remount-ro records the error
    behaviour in the superblock too.
    """
    return ["mkfs.ext4", "-q", "-F", "-m", "0", "-e", "remount-ro", "-L", label[:16],
            "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image)]


def e2fsck_argv(image: Path) -> list[str]:
    # -p: replay the journal and repair what is safe to repair without asking.
    return ["e2fsck", "-p", str(image)]


def e2fsck_ok(returncode: int) -> bool:
    """0 clean, 1 errors corrected, 2 corrected (reboot advised: only for a root filesystem);
    4 and up: errors left uncorrected or e2fsck itself failed."""
    return returncode in (0, 1, 2)


def losetup_attach_argv(image: Path, *, direct_io: bool) -> list[str]:
    return ["losetup", "--find", "--show", f"--direct-io={'on' if direct_io else 'off'}",
            str(image)]


def losetup_detach_argv(device: str) -> list[str]:
    # On a device still open (a mounted ext4) the kernel sets autoclear instead: the device is
    # freed when its last user closes it.
    return ["losetup", "--detach", device]


def ext4_mount_argv(device: str, mount_point: Path) -> list[str]:
    return ["mount", "-t", "ext4", "-o", EXT4_MOUNT_OPTIONS, device, str(mount_point)]


def fstrim_argv(mount_point: Path) -> list[str]:
    return ["fstrim", str(mount_point)]


def umount_argv(mount_point: Path, *, lazy: bool = False) -> list[str]:
    # A lazy umount detaches even a dead FUSE mount (ENOTCONN) or a busy one.
    return ["umount", *(["-l"] if lazy else []), str(mount_point)]


def staged_block_key(cache_dir: Path, staged: Path) -> str | None:
    """The object key of a staged block file, or None when it is not one.

    Staged blocks live at <cache-dir>/<uuid>/rawstaging/<key> where <key> is the block's key
    relative to the volume prefix (chunks/0/0/123_0_4096); with compression off the file is
    the object byte for byte.
    """
    try:
        relative = staged.relative_to(cache_dir)
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) < 4 or parts[1] != "rawstaging" or not _STAGED_BLOCK.match(parts[-1]):
        return None
    return f"{VOLUME_NAME}/" + "/".join(parts[2:])


# ---------------------------------------------------------------------------------------------
# Litestream
# ---------------------------------------------------------------------------------------------


def litestream_values(p: Paths, *, socket: bool = True) -> dict[str, Any]:
    return {
        "SOCKET_ENABLED": "true" if socket else "false",
        "LITESTREAM_SOCKET": str(p.litestream_socket),
        "META_DB": str(p.meta_db),
        "BUCKET": p.bucket,
        "REPLICA_PATH": REPLICA_PATH,
        "S3_ENDPOINT": settings.S3_ENDPOINT,
        "S3_REGION": settings.S3_REGION,
        "SYNC_INTERVAL": settings.LITESTREAM_SYNC_INTERVAL,
        "SNAPSHOT_INTERVAL": settings.LITESTREAM_SNAPSHOT_INTERVAL,
        "RETENTION": settings.LITESTREAM_RETENTION,
    }


def litestream_config(p: Paths, template: str | None = None, *, socket: bool = True) -> str:
    """The per-bucket config rendered from scripts/litestream-template.yml.

    Every value is validated before it gets here (bucket name, durations, an http(s) endpoint),
    so plain substitution cannot produce YAML that means something else. `socket=False`: the
    one-shot snapshot's copy, which must not take over the daemon's control socket.
    """
    text = template if template is not None else TEMPLATE.read_text()
    return string.Template(text).substitute(litestream_values(p, socket=socket))


def litestream_replicate_argv(litestream: str, p: Paths) -> list[str]:
    # -no-expand-env: the rendered file is literal; nothing from the environment leaks in.
    return [litestream, "replicate", "-config", str(p.litestream_config), "-no-expand-env"]


def litestream_sync_argv(litestream: str, p: Paths, *, timeout: int) -> list[str]:
    return [litestream, "sync", "-wait", "-timeout", str(timeout), "-json",
            "-socket", str(p.litestream_socket), str(p.meta_db)]


def litestream_control_argv(litestream: str, p: Paths, verb: str, *, timeout: int) -> list[str]:
    """`stop` or `start` replicating the database in the running daemon (its control socket)."""
    return [litestream, verb, "-timeout", str(timeout), "-json", "-socket",
            str(p.litestream_socket), str(p.meta_db)]


def litestream_snapshot_argv(litestream: str, config: Path) -> list[str]:
    """Sync once and write a new snapshot (level 9) from the local database, then exit."""
    return [litestream, "replicate", "-config", str(config), "-no-expand-env", "-once",
            "-force-snapshot"]


def sync_txid(value: Any) -> int:
    """A TXID of `litestream sync -json`: a JSON number (0.5.17), or a hex string."""
    return value if isinstance(value, int) else int(str(value or "0"), 16)


def litestream_restore_argv(litestream: str, p: Paths, *, timestamp: datetime | None,
                            output: Path, txid: int | None = None) -> list[str]:
    """Restore the state at `timestamp`, or exactly at `txid`, or (neither) the latest one.

    `-json` prints the TXID restored (logged); Litestream's own quick check deletes a database
    that fails it (storage hazard 8, docs/mounts.md), and steps.py checks again in full.
    """
    argv = [litestream, "restore", "-config", str(p.litestream_config), "-no-expand-env",
            "-if-replica-exists", "-integrity-check", "quick", "-json", "-o", str(output)]
    return argv + _restore_target(timestamp, txid) + [str(p.meta_db)]


def litestream_restore_plan_argv(litestream: str, p: Paths, *,
                                 timestamp: datetime | None) -> list[str]:
    """The files a restore at `timestamp` would apply, as JSON (nothing is written)."""
    return [litestream, "restore", "-config", str(p.litestream_config), "-no-expand-env",
            "-dry-run", "-json", "-o", f"{p.meta_db}.plan", *_restore_target(timestamp, None),
            str(p.meta_db)]


def litestream_ltx_argv(litestream: str, p: Paths) -> list[str]:
    """Every LTX file of the replica, all levels, as JSON: the states a restore can reach."""
    return [litestream, "ltx", "-config", str(p.litestream_config), "-no-expand-env",
            "-level", "all", "-json", str(p.meta_db)]


def _restore_target(timestamp: datetime | None, txid: int | None) -> list[str]:
    if txid is not None:
        return ["-txid", f"{txid:016x}"]
    if timestamp is not None:
        # Microseconds kept: truncating to the second would drop the sync that made the
        # last zero-RPO point (RFC 3339 with a fraction, which Go's parser accepts).
        return ["-timestamp", timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    return []


@dataclass(frozen=True)
class ReplicaState:
    """A state of the metadata a restore can reach exactly: an LTX file ends there."""

    txid: int
    at: datetime | None  # when Litestream shipped it (the earliest file ending there)


def replica_states(listing: list[dict[str, Any]]) -> list[ReplicaState]:
    """The states `litestream ltx -level all -json` lists, newest first.

    Any file's last TXID is a state: the snapshot (level 9) before it plus the files of every
    level up to it rebuild it; where they do not (retention removed a piece), that restore
    fails and the next state is tried.
    """
    when: dict[int, datetime | None] = {}
    for item in listing:
        txid = int(item["max_txid"], 16)
        try:
            at: datetime | None = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            at = None
        known = when.get(txid)
        when[txid] = at if known is None or (at is not None and at < known) else known
    return [ReplicaState(txid, when[txid]) for txid in sorted(when, reverse=True)]


def restore_plan_txid(plan: dict[str, Any]) -> int | None:
    """The state a restore plan (`restore -dry-run -json`) ends at."""
    value = plan.get("max_txid")
    return int(value, 16) if value else None


def restore_point(now: datetime, durable_at: datetime | None) -> datetime | None:
    """The newest metadata state whose blocks are all in S3 (storage hazards 1–2, docs/mounts.md).

    Without writeback a block is uploaded before close() returns: the latest state is
    consistent (None). With writeback, a state older than the upload delay plus a margin is;
    a later zero-RPO sync (`durable_at`) proves a newer one.
    """
    if not settings.WRITEBACK_ENABLED:
        return None
    lag = duration_seconds(settings.UPLOAD_DELAY) + settings.RESTORE_MARGIN_SECONDS
    point = now - timedelta(seconds=lag)
    if durable_at is not None and durable_at > point:
        point = durable_at
    return point


# ---------------------------------------------------------------------------------------------
# Snapshots (image layout): clones of the image in a root-only folder of the volume
# ---------------------------------------------------------------------------------------------

# Beside the image, inside the root-only IMAGE_DIR of the JuiceFS volume: in S3 with the volume,
# never under WORKSPACE_BASE, so no sandbox has a path to it (docs/snapshots.md).
SNAPSHOT_DIR = "snapshots"
# A snapshot's id names its two files: the agent makes it (uuid4 hex), never a caller.
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{32}$")
# A caller's label for a snapshot: stored in its sidecar, never used in a path.
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")


def snapshot_dir(p: Paths) -> Path:
    return p.volume_dir / IMAGE_DIR / SNAPSHOT_DIR


def snapshot_id_valid(value: str) -> bool:
    return bool(_SNAPSHOT_ID.fullmatch(value))


def snapshot_name_valid(value: str) -> bool:
    return bool(_SNAPSHOT_NAME.fullmatch(value))


def snapshot_image(p: Paths, snapshot_id: str) -> Path:
    """The clone of the image for a snapshot id (checked: it is joined into a path)."""
    if not snapshot_id_valid(snapshot_id):
        raise ValueError(f"not a snapshot id: {snapshot_id[:40]!r}")
    return snapshot_dir(p) / f"{snapshot_id}.ext4"


def snapshot_sidecar(p: Paths, snapshot_id: str) -> Path:
    return snapshot_image(p, snapshot_id).with_suffix(".json")


def juicefs_clone_argv(juicefs: str, source: Path, target: Path) -> list[str]:
    # A metadata-only copy-on-write clone (both paths inside one JuiceFS mount); --preserve
    # keeps root:root 0600/0644 of the image instead of the caller's umask.
    return [juicefs, "clone", "--preserve", str(source), str(target)]


def juicefs_info_argv(juicefs: str, files: list[Path]) -> list[str]:
    # --raw lists every slice of each file (chunk, slice id, slice size, offset, length),
    # asked of the mount itself: nothing opens JuiceFS's metadata database beside it.
    return [juicefs, "info", "--raw", *(str(path) for path in files)]


_INFO_FILE = re.compile(r"^(\S.*) :$")
_INFO_SLICE = re.compile(r"^\|\s*\d+\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|")


def info_slices(output: str) -> dict[str, dict[int, int]]:
    """`juicefs info --raw` output → {path as given: {slice id: slice size}} (id 0: a hole)."""
    found: dict[str, dict[int, int]] = {}
    current: dict[int, int] | None = None
    for line in output.splitlines():
        header = _INFO_FILE.match(line)
        if header:
            current = found.setdefault(header.group(1), {})
            continue
        row = _INFO_SLICE.match(line.strip())
        if row and current is not None and int(row.group(1)):
            current[int(row.group(1))] = int(row.group(2))
    return found


def exclusive_bytes(slices: dict[str, dict[int, int]]) -> dict[str, int]:
    """For each file, the bytes of the slices no other listed file references."""
    holders: dict[int, int] = {}
    for table in slices.values():
        for slice_id in table:
            holders[slice_id] = holders.get(slice_id, 0) + 1
    return {path: sum(size for slice_id, size in table.items() if holders[slice_id] == 1)
            for path, table in slices.items()}


FORK_DIR = "forks"


def fork_paths(parent: str, name: str) -> Paths:
    """A fork's paths: its workspace at WORKSPACE_BASE/{name}, its image inside the parent's
    volume at .weldr/forks/{name}/.weldr/workspace.ext4 (so `image` and the image steps work
    unchanged); no JuiceFS, Litestream or metadata of its own."""
    own = paths(name, IMAGE)
    volume = paths(parent, IMAGE).volume_dir / IMAGE_DIR / FORK_DIR / name
    return Paths(**{**own.__dict__, "volume_dir": volume})
