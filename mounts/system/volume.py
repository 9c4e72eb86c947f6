"""A bucket's volume: the keys beside it in S3, its layouts, and where its metadata, mount,
cache, sockets and logs live on this machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

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
TEMPLATE = Path(__file__).resolve().parents[2] / "scripts" / "litestream-template.yml"
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
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)?$")
# A unix socket's path must fit sun_path (108 bytes with its NUL).
UNIX_SOCKET_PATH_MAX = 107


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

    @property
    def image_clean(self) -> Path:
        """This machine's record of its last clean unmount of the image (root-only, beside the
        metadata database, which no sandbox sees): the next mount's e2fsck is redundant."""
        return self.meta_db.with_name(f"{self.bucket}.image-clean")


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
