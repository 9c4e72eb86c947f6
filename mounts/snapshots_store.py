"""The machine side of snapshots: freeze, flush, clone, thaw; sidecars; sizes.

Everything here works on the image file, its clones and the workspace's mount point — never on
the workspace's content (docs/security.md): the freeze is an ioctl on the mount point's root
directory, the clone is `juicefs clone` between two files of the volume's root-only `.weldr/`,
and the sidecars are the agent's own JSON files there, which no sandbox can reach.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from errno import EEXIST, EINTR
from pathlib import Path
from typing import Any

from django.conf import settings

from mounts import steps, system
from mounts.snapshots_errors import SnapshotFailed
from weldr_agent import lifecycle, runner

logger = logging.getLogger("weldr.snapshots")

# linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int).
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
SIDECAR_VERSION = 1
# Sidecars read at once when listing (each may be an S3 GET on a machine with a cold cache).
SIDECAR_READERS = 8


@dataclass(frozen=True)
class Sidecar:
    """What the volume says about one snapshot: the source of truth (a row is a cache)."""

    id: str
    bucket: str
    name: str
    note: str
    kind: str  # manual | checkpoint (before a workflow run)
    created_at: str
    run_id: str = ""
    frozen_ms: float = 0.0
    version: int = SIDECAR_VERSION


# ---------------------------------------------------------------------------------------------
# Freeze, flush, clone
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(mount_point: Path) -> Iterator[None]:
    """The ext4 at `mount_point` frozen (FIFREEZE) for the block; thawed whatever happens.

    FIFREEZE makes the filesystem consistent on its device before it returns: it writes every
    dirty page, commits the journal and marks the superblock clean, ending with a cache flush of
    the loop device — which the loop driver turns into fsync() of the image file, so JuiceFS
    holds every frozen write in its metadata. Writers block (in the kernel) until the thaw.

    Nothing in the block may write to the frozen filesystem: that write would wait for the thaw
    that only comes after it. A watchdog thread thaws it anyway after
    SNAPSHOT_CLONE_TIMEOUT_SECONDS + 5 s, so no mistake and no hung clone keeps the workspace's
    writers waiting for longer.
    """
    fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
        except OSError as error:
            raise SnapshotFailed(f"Freezing {mount_point} failed: {error}") from error
        watchdog = threading.Timer(settings.SNAPSHOT_CLONE_TIMEOUT_SECONDS + 5, thaw,
                                   args=(mount_point,))
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()
            thaw_fd(fd, mount_point)
    finally:
        os.close(fd)


def thaw_fd(fd: int, mount_point: Path) -> None:
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as error:
        logger.error("thawing %s failed: %s", mount_point, error)


def thaw(mount_point: Path) -> bool:
    """Thaw an ext4 left frozen (an agent that died between freeze and thaw); True if it was."""
    try:
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FITHAW, 0)
        logger.warning("thawed %s, left frozen", mount_point)
        return True
    except OSError:
        return False  # EINVAL: it was not frozen
    finally:
        os.close(fd)


def thaw_all() -> None:
    """At start-up, before reconcile: an agent that died between freeze and thaw left its ext4
    frozen (the kernel keeps it so), and every writer of that workspace — reconcile's own sync
    too — would wait forever. Thawing a filesystem that is not frozen does nothing."""
    base = f"{settings.WORKSPACE_BASE}/"
    for point, kind in steps.mount_table().items():
        if kind == "ext4" and point.startswith(base):
            thaw(Path(point))


def register() -> None:
    # Before the mounts' reconcile (order 10), which syncs workspaces.
    lifecycle.register("snapshots", order=5, startup=thaw_all)


def image_fsync(image: Path) -> None:
    """fsync() the image file in JuiceFS: the freeze already did (the loop device's flush), but
    a clone that missed one frozen write would be a silent hole, and this costs one round trip
    when nothing is dirty. Through a descriptor that writes: JuiceFS flushes its buffers of a
    file only for one (an fsync() of a read-only descriptor does nothing there)."""
    fd = os.open(image, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clone(volume: Path, source: Path, target: Path) -> None:
    """A metadata-only copy-on-write clone of one file of the JuiceFS volume mounted at
    `volume` into a new file of it, asked of the mounted client through its control file
    (`volume/.control`) — what `juicefs clone --preserve` does, without starting a juicefs
    process (measured: ~7 ms instead of ~110 ms, docs/snapshots.md). The target's folder exists
    already (made before any freeze).

    Every path here is the agent's, in the volume's root-only `.weldr/`, in a mount no sandbox
    sees; the control file is checked to be JuiceFS's own (its fixed inode, on the volume's
    device) before a byte is written to it.

    JuiceFS answers EINTR when the request was interrupted (a signal to the asking thread makes
    the kernel send FUSE an interrupt, and JuiceFS abandons the clone): seen once in a suite run
    under load. The clone is then asked again, up to CLONE_ATTEMPTS times.
    """
    for attempt in range(1, CLONE_ATTEMPTS + 1):
        errno = _clone_once(volume, source, target)
        if errno != EINTR or attempt == CLONE_ATTEMPTS:
            break
        logger.warning("cloning %s was interrupted (attempt %s); asking again", source.name,
                       attempt)
        with contextlib.suppress(OSError):
            target.unlink()  # whatever the abandoned clone made
    if errno:
        if errno != EEXIST:  # never remove a file that was there before
            with contextlib.suppress(OSError):
                target.unlink()
        raise SnapshotFailed(f"Cloning {source.name} failed: {os.strerror(errno)}")


CLONE_ATTEMPTS = 3


def _clone_once(volume: Path, source: Path, target: Path) -> int:
    """One clone through the control file: JuiceFS's errno (0: done)."""
    try:
        device = os.stat(volume).st_dev
        inodes = [_inode(path, device) for path in (source, source.parent, target.parent)]
        message = system.clone_message(*inodes, target.name)
        fd = os.open(volume / system.CONTROL_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, ValueError) as error:
        raise SnapshotFailed(f"Cloning {source.name} failed: {error}") from error
    try:
        found = os.fstat(fd)
        if found.st_ino != system.CONTROL_INODE or found.st_dev != device:
            raise SnapshotFailed(f"{volume / system.CONTROL_NAME} is not JuiceFS's control file")
        logger.debug("clone %s -> %s (JuiceFS control file)", source, target)
        os.write(fd, message)
        errno = _control_answer(fd, f"Cloning {source.name}")
    except OSError as error:
        raise SnapshotFailed(f"Cloning {source.name} failed: {error}") from error
    finally:
        os.close(fd)
    return errno


def _inode(path: Path, device: int) -> int:
    """The inode number JuiceFS knows `path` by; the path must be on the volume, not a link."""
    found = os.stat(path, follow_symlinks=False)
    if found.st_dev != device or stat.S_ISLNK(found.st_mode):
        raise ValueError(f"{path} is not a file of the volume")
    return found.st_ino


def _control_answer(fd: int, what: str) -> int:
    """Read the control file until the clone's errno arrives. It answers nothing (a read of 0
    bytes) until the client has done the work, so the read is repeated, 0.5 ms apart at first
    (each is one FUSE round trip), up to SNAPSHOT_CLONE_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + settings.SNAPSHOT_CLONE_TIMEOUT_SECONDS
    pause, answer = 0.0005, b""
    while True:
        chunk = os.read(fd, 65536)
        if chunk:
            answer += chunk
            try:
                errno = system.clone_reply(answer)
            except ValueError as error:
                raise SnapshotFailed(f"{what} failed: {error}") from error
            if errno is not None:
                return errno
            continue
        if time.monotonic() > deadline:
            raise SnapshotFailed(f"{what} took longer than "
                                 f"{settings.SNAPSHOT_CLONE_TIMEOUT_SECONDS} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def clean(image: Path) -> bool:
    """True when a clone's ext4 needs nothing of `e2fsck -p` (a clone of a frozen image: the
    freeze commits and empties the journal and leaves the superblock valid). The agent reads the
    1,024 bytes of the superblock itself — three fixed fields, nothing followed — from its own
    file in the volume's root-only `.weldr/`; anything unexpected means e2fsck runs as before."""
    try:
        fd = os.open(image, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        raw = os.pread(fd, system.SUPERBLOCK_SIZE, system.SUPERBLOCK_OFFSET)
    except OSError:
        return False
    finally:
        os.close(fd)
    return system.superblock_clean(raw)


def take(p: system.Paths, target: Path) -> float:
    """Freeze the workspace, make the image durable in JuiceFS, clone it, thaw; the frozen
    milliseconds."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Most dirty data goes to JuiceFS before the freeze, while writers still run: the freeze
    # then only flushes what was written since (measured: the pause with 50 MB unflushed
    # drops from ~440 ms to the 0 MB figure, docs/snapshots.md).
    steps.filesystem_sync(p.mount_point)
    started = time.monotonic()
    with frozen(p.mount_point):
        image_fsync(p.image)
        clone(p.volume_dir, p.image, target)
    return (time.monotonic() - started) * 1000


# ---------------------------------------------------------------------------------------------
# Sidecars: the list of snapshots lives in the volume (hence in S3)
# ---------------------------------------------------------------------------------------------


def sidecar_write(p: system.Paths, sidecar: Sidecar) -> None:
    """Write the sidecar atomically (temporary file, fsync, rename) after the clone: a sidecar
    means a complete snapshot."""
    path = system.snapshot_sidecar(p, sidecar.id)
    draft = path.with_suffix(".json.new")
    with open(draft, "w") as handle:
        json.dump(asdict(sidecar), handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    draft.rename(path)


def sidecar_parse(bucket: str, snapshot_id: str, text: str) -> Sidecar | None:
    """A sidecar read back, or None when it is not one of ours for this bucket."""
    try:
        data: dict[str, Any] = json.loads(text)
        sidecar = Sidecar(**{key: data[key] for key in Sidecar.__dataclass_fields__
                             if key in data})
    except (ValueError, TypeError):
        return None
    if sidecar.id != snapshot_id or sidecar.bucket != bucket:
        return None
    return sidecar


def sidecar_read(p: system.Paths, snapshot_id: str) -> Sidecar | None:
    """One complete snapshot of the volume (its sidecar and its image), or None: what a restore
    or a fork of one id reads, instead of every sidecar of the bucket."""
    if not system.snapshot_id_valid(snapshot_id):
        return None
    if not system.snapshot_image(p, snapshot_id).is_file():
        return None
    try:
        text = system.snapshot_sidecar(p, snapshot_id).read_text(errors="replace")
    except OSError:
        return None
    return sidecar_parse(p.bucket, snapshot_id, text)


def sidecars(p: system.Paths) -> list[Sidecar]:
    """Every complete snapshot of the volume (a sidecar and its image), oldest first.

    Read side by side: on a new machine each sidecar is a block JuiceFS fetches from S3 (its
    cache is empty), and one after another they made most of the first listing's time."""
    folder = system.snapshot_dir(p)
    ids = [path.stem for path in folder.glob("*.json")] if folder.is_dir() else []
    with ThreadPoolExecutor(max_workers=SIDECAR_READERS) as pool:
        found = [item for item in pool.map(lambda snapshot_id: sidecar_read(p, snapshot_id), ids)
                 if item is not None]
    return sorted(found, key=lambda item: (item.created_at, item.id))


def remove(p: system.Paths, snapshot_id: str) -> None:
    """Delete a snapshot: the sidecar first (then it is gone from every list), then the image
    (its blocks only held by it go to JuiceFS's trash, then out of the bucket)."""
    system.snapshot_sidecar(p, snapshot_id).unlink(missing_ok=True)
    system.snapshot_image(p, snapshot_id).unlink(missing_ok=True)


def orphans_remove(p: system.Paths) -> None:
    """Clones left without a sidecar (a crash between the clone and the sidecar): never listed,
    so removed. Called under the bucket's lock, when no snapshot is being taken."""
    folder = system.snapshot_dir(p)
    for image in folder.glob("*.ext4") if folder.is_dir() else []:
        if system.snapshot_id_valid(image.stem) \
                and not system.snapshot_sidecar(p, image.stem).exists():
            logger.warning("removing an unfinished snapshot %s of %s", image.stem, p.bucket)
            image.unlink(missing_ok=True)
    for draft in folder.glob("*.json.new") if folder.is_dir() else []:
        draft.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Size: the data a snapshot alone holds
# ---------------------------------------------------------------------------------------------


def sizes(p: system.Paths, snapshot_ids: list[str]) -> dict[str, int]:
    """Bytes held only by each snapshot's image: slices that neither the workspace's image, nor
    another snapshot, nor a fork references (`juicefs info --raw`, asked of the mount). A
    snapshot never diverged from holds 0; one the workspace moved away from, what changed.

    Asked of the mount, not read from JuiceFS's metadata database: nothing but JuiceFS and
    Litestream opens it while they run (storage hazard 8: concurrent users of one SQLite WAL).
    Slice granularity: a slice the workspace still uses in part counts as shared, so this is a
    lower bound of what deleting the snapshot frees.
    """
    images = {snapshot_id: system.snapshot_image(p, snapshot_id) for snapshot_id in snapshot_ids}
    others = [p.image, *p.volume_dir.glob(f"{system.IMAGE_DIR}/{system.FORK_DIR}/*/"
                                          f"{system.IMAGE_DIR}/{system.IMAGE_NAME}")]
    files = [path for path in [*images.values(), *others] if path.is_file()]
    if not images or not files:
        return {}
    try:
        output = runner.run(system.juicefs_info_argv(runner.tool("juicefs"), files),
                            timeout=120).stdout
    except runner.CommandError as error:
        logger.warning("sizes of %s's snapshots unknown: %s", p.bucket, error)
        return {}
    alone = system.exclusive_bytes(system.info_slices(output))
    return {snapshot_id: alone[str(path)] for snapshot_id, path in images.items()
            if str(path) in alone}
