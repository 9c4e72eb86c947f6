"""Snapshots (image layout): clones of the image in a root-only folder of the volume; forks.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from mounts.system.volume import IMAGE, IMAGE_DIR, Paths, paths

# Beside the image, inside the root-only IMAGE_DIR of the JuiceFS volume: in S3 with the volume,
# never under WORKSPACE_BASE, so no sandbox has a path to it (docs/snapshots.md).
SNAPSHOT_DIR = "snapshots"
# A snapshot's id names its two files: the agent makes it (uuid4 hex), never a caller.
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{32}$")
# A caller's label for a snapshot: stored in its sidecar, never used in a path.
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")
_INFO_FILE = re.compile(r"^(\S.*) :$")
_INFO_SLICE = re.compile(r"^\|\s*\d+\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|")
FORK_DIR = "forks"


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


# JuiceFS's control file (pkg/vfs/internal.go): a virtual file at the root of every JuiceFS
# mount, through which `juicefs clone` and its other tools ask the mounted client for an
# operation. Its inode number is fixed; a message is a big-endian (command, length) header and
# the command's fields; the answer, read back from the same descriptor once it is ready, is
# progress records (CONTROL_PROGRESS + two uint64) and, last, one byte: the errno (0: done).
CONTROL_NAME = ".control"
CONTROL_INODE = 0x7FFFFFFF00000002
CONTROL_CLONE = 1006
CONTROL_PROGRESS = 0xFE
_CLONE_PRESERVE = 0x02  # keep the source's uid, gid and mode (root:root 0600/0644 of images)
_CLONE_UMASK = 0o022
_CLONE_WORKERS = 1  # a single file: no tree to walk


def clone_message(source_ino: int, source_parent_ino: int, target_parent_ino: int,
                  target_name: str) -> bytes:
    """The control-file message of a metadata-only copy-on-write clone of one file of the
    volume (inode numbers as the mount reports them) to a new name in a folder of the volume:
    what `juicefs clone --preserve` sends, without starting a juicefs process (~100 ms of a
    snapshot's pause, most of it the Go binary's start)."""
    name = target_name.encode()
    if not 0 < len(name) < 256 or "/" in target_name:
        raise ValueError(f"not a file name: {target_name[:40]!r}")
    body = (struct.pack(">QQQB", source_ino, source_parent_ino, target_parent_ino, len(name))
            + name + struct.pack(">HBB", _CLONE_UMASK, _CLONE_PRESERVE, _CLONE_WORKERS))
    return struct.pack(">II", CONTROL_CLONE, len(body)) + body


def clone_reply(data: bytes) -> int | None:
    """The errno at the end of what the control file answered so far (0: cloned), or None
    while only progress records (whole or the start of one) have come; ValueError for anything
    else. A progress record starts with 0xFE, which is no errno (Linux's end below 140)."""
    offset = 0
    while offset < len(data):
        if data[offset] == CONTROL_PROGRESS:
            if offset + 17 > len(data):
                return None  # the rest of the record comes with the next read
            offset += 17
        elif len(data) - offset == 1:
            return data[offset]
        else:
            raise ValueError(f"not a clone answer: {data[:40].hex()}")
    return None


# The ext4 superblock (1,024 bytes at offset 1,024 of the image; little-endian): magic, state
# (VALID_FS: cleanly unmounted or frozen; ERROR_FS: the kernel recorded an error) and the
# incompatible features (RECOVER: the journal holds transactions to replay).
SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE = 1024, 1024
_EXT4_MAGIC, _STATE_VALID, _STATE_ERROR, _INCOMPAT_RECOVER = 0xEF53, 0x1, 0x2, 0x4


def superblock_clean(raw: bytes) -> bool:
    """True when the superblock is an ext4's that needs nothing of `e2fsck -p`: valid, no error
    recorded, no journal to replay — what a freeze leaves (and what e2fsck -p itself checks
    before it exits on a clean filesystem). Anything else, or anything short: False."""
    if len(raw) < SUPERBLOCK_SIZE:
        return False
    magic, state = struct.unpack_from("<HH", raw, 0x38)
    (incompat,) = struct.unpack_from("<I", raw, 0x60)
    return (magic == _EXT4_MAGIC and state & _STATE_VALID == _STATE_VALID
            and not state & _STATE_ERROR and not incompat & _INCOMPAT_RECOVER)


def juicefs_info_argv(juicefs: str, files: list[Path]) -> list[str]:
    # --raw lists every slice of each file (chunk, slice id, slice size, offset, length),
    # asked of the mount itself: nothing opens JuiceFS's metadata database beside it.
    return [juicefs, "info", "--raw", *(str(path) for path in files)]


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


def fork_paths(parent: str, name: str) -> Paths:
    """A fork's paths: its workspace at WORKSPACE_BASE/{name}, its image inside the parent's
    volume at .weldr/forks/{name}/.weldr/workspace.ext4 (so `image` and the image steps work
    unchanged); no JuiceFS, Litestream or metadata of its own."""
    own = paths(name, IMAGE)
    volume = paths(parent, IMAGE).volume_dir / IMAGE_DIR / FORK_DIR / name
    return Paths(**{**own.__dict__, "volume_dir": volume})
