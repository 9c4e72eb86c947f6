"""The steps of zero RPO on demand (staged blocks put into S3 as JuiceFS would; the sync itself,
with the replica's check, is mounts/replica.py's `durable`), and the teardown that stops
whatever runs for a bucket.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from mounts import system
from mounts.errors import SyncFailed
from mounts.steps.image import image_release, loop_devices
from mounts.steps.mountpoints import answers, mount_table, umount
from mounts.steps.processes import daemons, memory_group, memory_release, orphan_abort, pid_stop
from weldr_agent import runner, s3

logger = logging.getLogger("weldr.mounts")

STAGED_UPLOAD_THREADS = 10  # boto3 keeps 10 connections per client
# Staged block keys this process has put into S3, per cache folder (see staged_upload).
_uploaded: dict[str, set[str]] = {}


def staged_upload(p: system.Paths) -> int:
    """Upload every block still staged for this mount; the number uploaded.

    JuiceFS has no command to upload staged blocks now (`umount --flush` waits out the upload
    delay, storage hazard 6, docs/mounts.md), so we put them ourselves under the keys JuiceFS would
    use. Blocks
    are immutable, so JuiceFS uploading the same block later writes the same bytes.
    """
    # A block's key names its content (id, index, size): once put, it never needs putting
    # again, though JuiceFS keeps it staged until its own upload delay is over.
    done = _uploaded.setdefault(str(p.cache_dir), set())
    blocks = []
    for staged in p.cache_dir.glob("*/rawstaging/**/*"):
        key = system.staged_block_key(p.cache_dir, staged)
        if key is not None and key not in done and staged.is_file():
            blocks.append((staged, key))
    if blocks:
        blocks = staged_encode(p, blocks)
    client = s3.client()

    def put(item: tuple[Path, str]) -> int:
        staged, key = item
        try:
            data = staged.read_bytes()
        except FileNotFoundError:
            return 0  # JuiceFS uploaded it (or the file was deleted) meanwhile
        client.put_object(Bucket=p.bucket, Key=key, Body=data)
        done.add(key)
        if staged.parent.name == system.ENCODED_DIR:
            staged.unlink(missing_ok=True)
        return 1

    try:
        # Small blocks: the time is in round trips, so many in flight.
        with ThreadPoolExecutor(max_workers=STAGED_UPLOAD_THREADS) as pool:
            return sum(pool.map(put, blocks))
    except (ClientError, BotoCoreError) as error:
        raise SyncFailed(f"Uploading staged blocks of {p.bucket} failed: {error}") from error


def volume_compression(p: system.Paths) -> str:
    """The volume's object compression as its running JuiceFS reports it (`.config`).

    Asked of the mount, not of the metadata database (the agent does not open that while
    JuiceFS and Litestream run); `.config` is JuiceFS's own internal file at its root, never
    workspace content (opened without following a link all the same).
    """
    try:
        fd = os.open(p.volume_point / ".config", os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return system.config_compression(handle.read())
    except (OSError, ValueError) as error:
        raise SyncFailed(f"Reading {p.bucket}'s JuiceFS configuration failed: {error}") \
            from error


def staged_encode(p: system.Paths, blocks: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The staged blocks as JuiceFS itself would store them: compressed when the volume is.

    A staged block is the raw data; JuiceFS compresses at upload. An object put raw into a
    compressing volume is unreadable (JuiceFS fails its read: EIO) once the local copy is gone,
    as after a machine loss — so a zstd volume's blocks are compressed here first, at JuiceFS's
    level, into standard zstd frames that its decoder reads like its own (tested:
    tests/mounts/test_durability.py, machine loss after a zero-RPO sync).
    """
    compression = volume_compression(p)
    if compression == "none":
        return blocks
    if compression != "zstd":
        raise SyncFailed(f"{p.bucket}'s volume compresses with {compression!r}; the zero-RPO "
                         "sync can encode only zstd (JUICEFS_COMPRESSION) or none.")
    out = p.cache_dir / system.ENCODED_DIR
    out.mkdir(mode=0o700, exist_ok=True)
    for start in range(0, len(blocks), system.ZSTD_BATCH):
        batch = [staged for staged, _ in blocks[start:start + system.ZSTD_BATCH]]
        result = runner.run(system.zstd_argv(batch, out), timeout=600, check=False)
        # A failure is tolerated only where its input vanished (JuiceFS uploaded the block
        # meanwhile); zstd removes the output of an input it failed on.
        failed = [staged for staged in batch
                  if staged.exists() and not (out / system.zstd_name(staged)).is_file()]
        if result.returncode != 0 and failed:
            raise SyncFailed(f"Compressing {p.bucket}'s staged blocks failed: "
                             f"{result.stderr.strip()[-500:]}")
    return [(out / system.zstd_name(staged), key) for staged, key in blocks]


def teardown(p: system.Paths, *, juicefs_pid: int | None, litestream_pid: int | None,
             grace: float = 30) -> None:
    """Stop whatever runs for this bucket, without questions: the failure and crash path.

    Whatever the layout: an ext4 at the workspace and the loop devices over the image go first
    (the loop device must let go of the image before JuiceFS does, else its backing file is a
    file of a detached mount that no path names any more), then JuiceFS wherever it is mounted.
    """
    # Asking a mount whose JuiceFS processes cannot answer would wait forever.
    orphan_abort(p, juicefs_pid)
    image_release(p)
    for point in (p.mount_point, p.volume_dir):
        umount(point, lazy=not answers(point))
    pid_stop(juicefs_pid, system.daemon_tag(p, system.JUICEFS), grace=grace)
    pid_stop(litestream_pid, system.daemon_tag(p, system.LITESTREAM), grace=grace)
    # Daemons whose pids were lost (a crash) or that a watchdog restarted.
    for kind in (system.JUICEFS, system.LITESTREAM):
        for pid in daemons(p, kind):
            logger.warning("stopping leftover %s %s of %s", kind, pid, p.bucket)
            pid_stop(pid, system.daemon_tag(p, kind), grace=grace)
    umount(p.mount_point, lazy=True)
    umount(p.volume_dir, lazy=True)
    p.litestream_socket.unlink(missing_ok=True)
    memory_release(p)


def leftovers(p: system.Paths) -> bool:
    """True when anything of this bucket is on the machine: a mount, a daemon, a loop device,
    its JuiceFS's memory cgroup."""
    table = mount_table()
    return (str(p.mount_point) in table or str(p.volume_dir) in table or bool(daemons(p))
            or bool(loop_devices(p.image)) or memory_group(p).is_dir())
