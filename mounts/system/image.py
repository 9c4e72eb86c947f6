"""Image layout: an ext4 filesystem in one sparse file of the JuiceFS volume, on a loop device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mounts.system.volume import FILES, IMAGE, IMAGE_DIR, LAYOUTS

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
# JuiceFS's inode types (jfs_node.type) and the root-only marks of what the agent made.
NODE_FILE, NODE_DIR = 1, 2


def layout_parse(text: str) -> str:
    """The layout recorded at LAYOUT_KEY; ValueError for anything else."""
    value = text.strip()
    if value not in LAYOUTS:
        raise ValueError(f"not a layout: {value[:40]!r}")
    return value


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
