"""What is mounted where (/proc/self/mountinfo), whether JuiceFS answers, flushing and
unmounting a mount point.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mounts import system
from mounts.errors import SyncFailed
from weldr_agent import runner

logger = logging.getLogger("weldr.mounts")


def mountinfo() -> dict[str, tuple[str, str, str, str]]:
    """Mount point → (filesystem type, source, superblock options, device major:minor), from
    /proc/self/mountinfo; for a point mounted over, the topmost mount."""
    table = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            point = fields[4].encode().decode("unicode_escape")
            tail = line.split(" - ", 1)[1].split()
            tail += [""] * (3 - len(tail))
            table[point] = (tail[0], tail[1], tail[2], fields[2])
    return table


def mount_table() -> dict[str, str]:
    """Mount points and their filesystem types, from /proc/self/mountinfo."""
    return {point: entry[0] for point, entry in mountinfo().items()}


def fuse_connection(mount_point: Path) -> Path | None:
    """The kernel's control folder of the FUSE mount at `mount_point` (/sys/fs/fuse/connections/
    <the mount's device minor>), read from /proc/self/mountinfo without touching the mount."""
    entry = mountinfo().get(str(mount_point))
    return None if entry is None else Path("/sys/fs/fuse/connections") / entry[3].split(":")[-1]


def is_mounted(mount_point: Path) -> bool:
    return mount_table().get(str(mount_point), "").startswith("fuse.juicefs")


def answers(mount_point: Path) -> bool:
    """True when the JuiceFS mount serves requests (a dead FUSE mount gives ENOTCONN)."""
    try:
        if not is_mounted(mount_point) or os.stat(mount_point).st_ino != system.ROOT_INODE:
            return False
        # stat() alone can be answered from the kernel's attribute cache (300 s) after the
        # daemon died; opening the directory always reaches the daemon.
        os.listdir(mount_point)
        return True
    except OSError:
        return False


def filesystem_sync(mount_point: Path) -> None:
    """Push the kernel's and JuiceFS's buffers for this mount into its staging folder."""
    try:
        runner.run(["sync", "-f", str(mount_point)], timeout=120)
    except runner.CommandError as error:
        raise SyncFailed(f"Flushing {mount_point} failed: {error}") from error


def umount(mount_point: Path, *, lazy: bool = False) -> None:
    """Unmount if mounted; a busy or dead (ENOTCONN) mount falls back to a lazy unmount."""
    if str(mount_point) not in mount_table():
        return
    try:
        runner.run(system.umount_argv(mount_point, lazy=lazy), timeout=60)
    except runner.CommandError:
        if lazy:
            raise
        logger.warning("umount %s failed; detaching it lazily", mount_point)
        runner.run(system.umount_argv(mount_point, lazy=True), timeout=60)
