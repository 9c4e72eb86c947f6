"""Snapshots (image layout): clones of the image in a root-only folder of the volume; forks.
"""

from __future__ import annotations

import re
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


def juicefs_clone_argv(juicefs: str, source: Path, target: Path) -> list[str]:
    # A metadata-only copy-on-write clone (both paths inside one JuiceFS mount); --preserve
    # keeps root:root 0600/0644 of the image instead of the caller's umask.
    return [juicefs, "clone", "--preserve", str(source), str(target)]


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
