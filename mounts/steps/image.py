"""Image layout: ext4 in one sparse file of the JuiceFS volume, on a loop device."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from django.conf import settings

from mounts import system
from mounts.errors import MountFailed
from mounts.steps.mountpoints import filesystem_sync, mount_table, mountinfo, umount
from mounts.steps.processes import LOG_TAIL
from weldr_agent import runner

logger = logging.getLogger("weldr.mounts")


def image_create(p: system.Paths) -> None:
    """A new sparse image with a fresh ext4, made under a temporary name and renamed into place,
    so that the image's presence means a complete filesystem."""
    folder = p.image.parent
    folder.mkdir(mode=0o700, exist_ok=True)
    draft = folder / f"{p.image.name}.new"
    draft.unlink(missing_ok=True)
    with open(draft, "wb") as handle:
        handle.truncate(settings.WORKSPACE_IMAGE_SIZE_GB * 1024**3)
    try:
        runner.run(system.mkfs_ext4_argv(draft, label=p.bucket), timeout=300)
    except runner.CommandError as error:
        draft.unlink(missing_ok=True)
        raise MountFailed(f"Creating {p.bucket}'s workspace image failed: {error}") from error
    draft.rename(p.image)


def loop_devices(image: Path) -> list[str]:
    """The loop devices bound to `image` (its exact path: other agents' images never match)."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue  # detached meanwhile
        if name.removesuffix(" (deleted)") == str(image):
            found.append(f"/dev/{backing.parent.parent.name}")
    return sorted(found)


def loop_release_wait(image: Path, *, timeout: float, interval: float) -> bool:
    """Wait for the loop devices of `image` to let go of it: after its ext4's unmount the
    kernel detaches an autoclear device asynchronously. False if one is still bound."""
    return runner.wait_until(lambda: not loop_devices(image), timeout=timeout, interval=interval)


def loop_detach(device: str) -> None:
    result = runner.run(system.losetup_detach_argv(device), timeout=60, check=False)
    if result.returncode != 0 and Path(f"/sys/block/{Path(device).name}/loop").exists():
        logger.warning("losetup --detach %s failed: %s", device, result.stderr.strip())


def image_mounted(p: system.Paths) -> bool:
    """True when the workspace is the image's ext4, mounted read-write (ext4 remounts itself
    read-only when the image's I/O fails, e.g. when JuiceFS died under the loop device)."""
    entry = mountinfo().get(str(p.mount_point))
    return entry is not None and entry[0] == "ext4" and "rw" in entry[2].split(",")


def image_mount(p: system.Paths, *, check: bool = True) -> None:
    """Check the image, attach it to a loop device and mount its ext4 at the workspace.

    `check` False only where e2fsck -p would read a clean superblock and exit: this machine's
    own clean unmount is the image's last write (image_clean_take), or the image is a clone of
    a frozen image whose superblock the caller found clean (snapshots; docs/snapshots.md,
    "Restores and forks without e2fsck").
    """
    for device in loop_devices(p.image):
        # A crash between attaching and mounting left this one: never two devices on one image.
        logger.warning("detaching stale loop device %s of %s", device, p.bucket)
        loop_detach(device)
    if check:
        image_check(p)
    else:
        logger.info("e2fsck of %s's image skipped: its superblock is known clean", p.bucket)
    try:
        device = runner.run(system.losetup_attach_argv(
            p.image, direct_io=settings.WORKSPACE_IMAGE_DIRECT_IO), timeout=60).stdout.strip()
    except runner.CommandError as error:
        raise MountFailed(f"Attaching {p.bucket}'s image to a loop device failed: {error}") \
            from error
    p.mount_point.mkdir(parents=True, exist_ok=True)
    try:
        runner.run(system.ext4_mount_argv(device, p.mount_point), timeout=120)
    except runner.CommandError as error:
        loop_detach(device)
        raise MountFailed(f"Mounting {p.bucket}'s image failed: {error}") from error
    # The mounted ext4 holds the device open: detaching now only sets autoclear, so the device
    # goes away by itself with the ext4's unmount, whoever unmounts it (also after a crash).
    loop_detach(device)


def image_check(p: system.Paths) -> None:
    """e2fsck -p: replay the journal, repair what is safe; MountFailed beyond that.

    On every mount but the one after this machine's own clean unmount: a crash or a lost
    machine leaves a journal to replay; on a clean filesystem it only reads the superblock.
    """
    check = runner.run(system.e2fsck_argv(p.image), timeout=settings.MOUNT_TIMEOUT_SECONDS * 5,
                       check=False)
    if check.returncode:
        logger.warning("e2fsck -p on %s's image: exit %s: %s", p.bucket, check.returncode,
                       (check.stdout + check.stderr).strip()[-LOG_TAIL:])
    if not system.e2fsck_ok(check.returncode):
        raise MountFailed(f"The workspace image of {p.bucket} has errors e2fsck -p cannot fix "
                          f"(exit {check.returncode}): {(check.stdout + check.stderr)[-500:]}")


def image_flush(p: system.Paths) -> None:
    """Push the ext4's writes into the image file, then release the blocks of deleted files.

    syncfs commits the ext4 journal and ends in a cache flush of the loop device, which the loop
    driver turns into fsync() of the image file: JuiceFS then holds every write like any other.
    fstrim turns the free extents into holes in the image (the loop device punches them), so
    deleted files stop costing bucket space (after JuiceFS's trash days); ext4 remembers what it
    trimmed since mounting, so a repeated fstrim only visits what was freed since (measured:
    0.2 s for the first fstrim of an empty 20 GB image, 0.01 s for the next).
    """
    filesystem_sync(p.mount_point)
    result = runner.run(system.fstrim_argv(p.mount_point), timeout=600, check=False)
    if result.returncode != 0:
        logger.warning("fstrim of %s failed: %s", p.bucket, result.stderr.strip())


def image_release(p: system.Paths, *, trim: bool = False) -> None:
    """Unmount the workspace's ext4 and detach the image's loop devices; idempotent.

    With `trim` (a clean unmount, JuiceFS alive): sync, then fstrim so that the blocks of
    deleted files become holes in the image and their slices leave the bucket.
    """
    if mount_table().get(str(p.mount_point)) == "ext4":
        if trim and image_mounted(p):
            image_flush(p)
        umount(p.mount_point)
    for device in loop_devices(p.image):
        loop_detach(device)
    if trim:
        image_file_flush(p)


def image_file_flush(p: system.Paths) -> None:
    """After the ext4's unmount: wait until the loop device has let go of the image, then have
    JuiceFS stage what it still buffers of it, so the zero-RPO sync that follows finds it.

    The loop device closes the image asynchronously after the unmount, and its last writes (the
    superblock marked clean) reach JuiceFS only then. `sync -f` on JuiceFS's mount does not
    flush JuiceFS's own write buffers, and an fsync() on a read-only descriptor does not either
    (JuiceFS flushes only through a handle that writes): a block staged after the sync's upload
    waits for the next mount of the same cache folder, while the metadata naming it is already
    in S3 — after a machine loss the image's superblock read as EIO (bench/bench_bucket.py).
    """
    loop_release_wait(p.image, timeout=30, interval=0.05)
    try:
        fd = os.open(p.image, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The record of a clean unmount: when this machine's own clean unmount is the image's last
# write, the next mount's e2fsck -p has nothing to do (docs/mounts.md, "Remount")
# ---------------------------------------------------------------------------------------------


def image_identity(p: system.Paths) -> list[int] | None:
    """The image file as JuiceFS knows it: inode, size, modification and change times (ns).

    Any write, truncate, rename over it (a snapshot restore, a fork's promotion) or restored
    metadata changes one of them. None when there is no image.
    """
    try:
        info = os.stat(p.image, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def image_clean_record(p: system.Paths, identity: list[int]) -> None:
    """Record that this machine unmounted the image cleanly and that `identity` is the image
    its unmount left (root-only, beside the metadata database: no sandbox sees it)."""
    draft = p.image_clean.with_name(f"{p.image_clean.name}.new")
    draft.unlink(missing_ok=True)
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"image": identity}, handle)
    draft.rename(p.image_clean)


def image_clean_take(p: system.Paths) -> list[int] | None:
    """The identity a clean unmount recorded (image_clean_record), and the record removed: it
    vouches for one mount only, so a crash after this mount leaves none and e2fsck runs."""
    try:
        fd = os.open(p.image_clean, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        with os.fdopen(fd) as handle:
            identity = json.load(handle).get("image")
    except (OSError, ValueError, AttributeError):
        identity = None
    finally:
        p.image_clean.unlink(missing_ok=True)
    valid = isinstance(identity, list) and all(isinstance(x, int) for x in identity)
    return identity if valid else None
