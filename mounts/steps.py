"""The steps of mounting and unmounting, run on the machine through weldr_agent.runner.

Each function does one step and raises a typed error (mounts.errors) when it fails; the order
of the steps and the state database belong to mounts/services.py. Argv, environments and
configs come from mounts/system.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from mounts import system
from mounts.errors import MountBusy, MountFailed, StorageUnavailable, SyncFailed, VolumeGone
from weldr_agent import runner, s3

logger = logging.getLogger("weldr.mounts")

# Popen objects of the daemons this process started, so that their exit is reaped (a zombie
# would look alive to a pid check). Daemons started by another process are tracked by pid.
_children: dict[int, runner.Popen[bytes]] = {}
_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                "InvalidToken", "ExpiredToken"}
LOG_TAIL = 1500
STAGED_UPLOAD_THREADS = 10  # boto3 keeps 10 connections per client
# Staged block keys this process has put into S3, per cache folder (see staged_upload).
_uploaded: dict[str, set[str]] = {}


# ---------------------------------------------------------------------------------------------
# Locking: one operation per bucket at a time, across processes (agent, manage.py, scripts)
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bucket_lock(p: system.Paths, *, timeout: float) -> Iterator[None]:
    p.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(p.lock, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MountBusy() from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_bucket_lock(p: system.Paths) -> contextlib.AbstractContextManager[None] | None:
    """The bucket's lock when it is free right now, else None (an operation is in flight)."""
    try:
        lock = bucket_lock(p, timeout=0)
        lock.__enter__()
    except MountBusy:
        return None
    return lock


# ---------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------


def _storage_error(error: Exception, bucket: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"S3 at {settings.S3_ENDPOINT} refused or did not answer for bucket {bucket!r}: {error}"
    )


def ensure_bucket(bucket: str) -> None:
    """Create the bucket when it does not exist; StorageUnavailable when S3 says no."""
    client = s3.client()
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def prefix_empty(bucket: str, prefix: str) -> bool:
    try:
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as error:
        raise _storage_error(error, bucket) from error
    return not listed.get("KeyCount") and not listed.get("Contents")


def volume_present(bucket: str) -> bool:
    """The bucket still holds the JuiceFS volume: `juicefs format` writes this object."""
    try:
        s3.client().head_object(Bucket=bucket, Key=system.VOLUME_UUID_KEY)
        return True
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404",
                                                                     "NotFound"}:
            return False
        raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def durable_marker_read(bucket: str) -> datetime | None:
    try:
        body = s3.client().get_object(Bucket=bucket, Key=system.DURABLE_MARKER_KEY)["Body"]
        return datetime.fromisoformat(body.read().decode().strip())
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404"}:
            return None
        raise _storage_error(error, bucket) from error
    except ValueError:
        return None
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def durable_marker_write(bucket: str, when: datetime) -> None:
    s3.client().put_object(Bucket=bucket, Key=system.DURABLE_MARKER_KEY,
                           Body=when.isoformat().encode())


# ---------------------------------------------------------------------------------------------
# Metadata: reuse, restore or format
# ---------------------------------------------------------------------------------------------


def litestream_config_write(p: system.Paths) -> None:
    p.litestream_config.parent.mkdir(parents=True, exist_ok=True)
    p.litestream_config.write_text(system.litestream_config(p))


def chunk_counter_advance(db: Path) -> None:
    """Move JuiceFS's block-ID counter past anything the lost metadata may have issued."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE jfs_counter SET value = value + ? WHERE name = 'nextChunk'",
            (system.CHUNK_COUNTER_ADVANCE,),
        )


def _remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def integrity_problem(db: Path) -> str | None:
    """What SQLite's full integrity check finds wrong with `db`; None when it finds nothing.

    Litestream's own `-integrity-check quick` runs first (in its SQLite, which deletes a
    failing restore). This one is a second SQLite (Python's) and the full check: quick_check
    does not compare an index's entries with its table's rows, and a restored database whose
    index and table disagree makes JuiceFS misbehave (storage hazard 8, docs/mounts.md).
    """
    try:
        with contextlib.closing(sqlite3.connect(db)) as connection:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if rows == ["ok"] else "; ".join(rows)


def _restore(p: system.Paths, output: Path, *, point: datetime | None = None,
             txid: int | None = None) -> str | None:
    """Restore one state of the replica into `output` and check it: None when `output` holds
    a sound database (or nothing matched), else what went wrong (and `output` is removed)."""
    _remove_db(output)
    try:
        runner.run(system.litestream_restore_argv(runner.tool("litestream"), p, timestamp=point,
                                                  txid=txid, output=output),
                   env=system.litestream_env(), timeout=settings.MOUNT_TIMEOUT_SECONDS)
    except runner.CommandError as error:
        _remove_db(output)
        return str(error)
    problem = integrity_problem(output) if output.exists() else None
    if problem is not None:
        _remove_db(output)
        return f"integrity check failed: {problem}"
    return None


# For mounts/replica.py, which checks the replica's newest state after a zero-RPO sync.
restore_into, db_remove = _restore, _remove_db


def _litestream_json(argv: list[str]) -> Any:
    """A Litestream command's JSON answer; None when it failed (logged)."""
    try:
        result = runner.run(argv, env=system.litestream_env(),
                            timeout=settings.MOUNT_TIMEOUT_SECONDS)
        return json.loads(result.stdout or "null")
    except (runner.CommandError, ValueError) as error:
        logger.error("%s", error)
        return None


def _plan_txid(p: system.Paths, point: datetime | None) -> int | None:
    """The TXID a restore at `point` would end at (None: no plan)."""
    plan = _litestream_json(system.litestream_restore_plan_argv(runner.tool("litestream"), p,
                                                                timestamp=point))
    return system.restore_plan_txid(plan) if isinstance(plan, dict) else None


def _restore_exactly(p: system.Paths, staging: Path, **target: Any) -> str | None:
    """_restore, where "nothing matched" is a failure too: the state was asked for by name."""
    failure = _restore(p, staging, **target)
    if failure is None and not staging.exists():
        return "the replica cannot rebuild that state (a file of its chain is gone)"
    return failure


def _restore_fallback(p: system.Paths, staging: Path, point: datetime | None,
                      durable_at: datetime | None, failure: str) -> None:
    """The chosen state could not be restored sound: restore the newest state that can.

    Tried in this order, each with both integrity checks, stopping at the first sound one:
    the same state once more (a restore that failed for a passing reason — a download, the
    machine — gives a sound database the second time); then older states, newest first: their
    blocks all exist, since JuiceFS's trash keeps deleted files and overwritten slices for
    TRASH_DAYS (storage hazard 2), so they only lose the writes made after them; last the
    latest state, newer than the restore point, whose newest blocks may never have left the
    lost machine (their reads fail; `juicefs fsck` lists them). A database that failed a
    check is never mounted: with no sound state, the mount fails and the replica is kept.
    """
    target = str(point or "the latest state")
    logger.error("METADATA RESTORE FAILED for %s at %s: %s. Retrying once.", p.bucket, target,
                 failure)
    tried = [f"{target}: {failure}"]
    failure = _restore_exactly(p, staging, point=point)
    if failure is None:
        logger.error("METADATA RESTORE of %s at %s succeeded on the retry: the first "
                     "failure did not repeat (a fault of the download or of this machine, not "
                     "of the replica).", p.bucket, target)
        return
    tried.append(f"{target} again: {failure}")
    litestream = runner.tool("litestream")
    listing = _litestream_json(system.litestream_ltx_argv(litestream, p))
    if not isinstance(listing, list):
        raise MountFailed(f"Restoring {p.bucket}'s metadata failed and its replica could not be "
                          f"listed for an older state: {' | '.join(tried)}")
    states = system.replica_states(listing)
    chosen = _plan_txid(p, point) or (states[0].txid if states else 0)
    # The state the last zero-RPO sync made durable, by Litestream's own clock (the listing's
    # times are whole seconds): falling back behind it loses writes a caller was promised.
    durable_txid = _plan_txid(p, durable_at) if durable_at is not None else None
    deadline = time.monotonic() + settings.MOUNT_TIMEOUT_SECONDS
    for state in (s for s in states if s.txid < chosen):
        if time.monotonic() > deadline:
            tried.append("older states: out of time")
            break
        failure = _restore_exactly(p, staging, txid=state.txid)
        if failure is None:
            behind = ""
            if durable_txid is not None and state.txid < durable_txid:
                behind = (f" It is OLDER than the last zero-RPO sync ({durable_at}, TXID "
                          f"{durable_txid:x}): writes made durable by that sync are lost.")
            logger.error("METADATA RESTORED FROM AN OLDER STATE: %s's metadata at TXID %x "
                         "(shipped at %s) instead of TXID %x; metadata changes made after it are "
                         "lost.%s The replica is unchanged. Failed: %s", p.bucket, state.txid,
                         state.at or "an unknown time", chosen, behind, " | ".join(tried))
            return
        tried.append(f"TXID {state.txid:x}: {failure}")
    if states and states[0].txid > chosen:
        failure = _restore_exactly(p, staging)
        if failure is None:
            logger.error("METADATA RESTORED FROM THE LATEST STATE: %s's metadata at TXID %x, "
                         "newer than the restore point %s: blocks written within the upload "
                         "delay before the machine was lost may be missing (reads fail with "
                         "EIO; `juicefs fsck` lists them). Failed: %s", p.bucket,
                         states[0].txid, target, " | ".join(tried))
            return
        tried.append(f"latest: {failure}")
    raise MountFailed(
        f"No state of {p.bucket}'s metadata replica ({system.REPLICA_PATH} in the bucket) "
        f"restores to a database that passes its integrity check; refusing to mount a damaged "
        f"one. The replica is unchanged. Tried: {' | '.join(tried)}"
    )


def metadata_restore(p: system.Paths) -> bool:
    """Restore the metadata database from its replica; False when there is no replica."""
    if prefix_empty(p.bucket, f"{system.REPLICA_PATH}/"):
        return False
    durable_at = durable_marker_read(p.bucket)
    point = system.restore_point(datetime.now(UTC), durable_at)
    staging = p.meta_db.with_name(f"{p.meta_db.name}.restoring")
    failure = _restore(p, staging, point=point)
    if failure is None and not staging.exists() and point is not None:
        # Nothing in the replica is that old: the volume is younger than the upload delay and
        # was never synced with zero RPO. The latest state is the best there is; blocks it
        # names that never left the lost machine read as EIO (`juicefs fsck` lists them).
        logger.warning("no metadata of %s as old as %s; restoring the latest", p.bucket, point)
        point = None
        failure = _restore(p, staging)
    if failure is not None:
        _restore_fallback(p, staging, point, durable_at, failure)
    if not staging.exists():
        raise MountFailed(f"Litestream found no usable backup of {p.bucket}'s metadata; see "
                          f"{system.REPLICA_PATH} in the bucket.")
    chunk_counter_advance(staging)
    _remove_db(p.meta_db)
    staging.rename(p.meta_db)
    _remove_db(staging)
    return True


def metadata_prepare(p: system.Paths) -> str:
    """Put a metadata database in place: "local" (reused), "restored" (from S3) or "formatted"."""
    p.meta_db.parent.mkdir(parents=True, exist_ok=True)
    litestream_config_write(p)
    if p.meta_db.exists():
        # Same machine (a crash or a clean unmount): the local database is the newest state, and
        # the staged blocks in the same cache folder are uploaded on mount (storage hazard 1,
        # docs/mounts.md).
        if volume_present(p.bucket):
            return "local"
        # The bucket was deleted (or emptied) under us: this metadata names blocks that no
        # longer exist, so mounting it would show files whose reads fail. Keep it for forensics
        # but out of the way, so that the next mount starts an empty volume.
        aside = p.meta_db.with_name(f"{p.meta_db.name}.orphaned-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{p.meta_db}{suffix}")
            if source.exists():
                source.rename(f"{aside}{suffix}")
        raise VolumeGone(
            f"Bucket {p.bucket!r} no longer holds its JuiceFS volume (the bucket was deleted or "
            f"emptied); its files are gone. This machine's metadata was set aside as {aside}; "
            "mounting again starts an empty workspace."
        )
    if metadata_restore(p):
        return "restored"
    if not prefix_empty(p.bucket, f"{system.VOLUME_NAME}/"):
        raise MountFailed(
            f"Bucket {p.bucket!r} holds a JuiceFS volume but its metadata replica "
            f"({system.REPLICA_PATH}) is missing; refusing to format over it."
        )
    juicefs = runner.tool("juicefs")
    try:
        runner.run(system.juicefs_format_argv(juicefs, p), env=system.juicefs_env(),
                   timeout=settings.MOUNT_TIMEOUT_SECONDS)
    except runner.CommandError as error:
        _remove_db(p.meta_db)
        raise MountFailed(f"Formatting {p.bucket} failed: {error}") from error
    return "formatted"


def metadata_set_aside(p: system.Paths, reason: str) -> None:
    """Move this machine's metadata of the bucket out of the way, so that the mount restores
    the replica: another machine wrote the bucket since (its lease said so), and mounting the
    older local copy would fork the volume's history. Kept beside it for forensics."""
    if not p.meta_db.exists():
        return
    aside = p.meta_db.with_name(f"{p.meta_db.name}.stale-{int(time.time())}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{p.meta_db}{suffix}")
        if source.exists():
            source.rename(f"{aside}{suffix}")
    logger.warning("metadata of %s set aside as %s (%s); restoring the replica", p.bucket,
                   aside, reason)


def format_secrets_remove(db: Path) -> bool:
    """Remove the S3 keys from a volume's settings (made by an older agent); True if any were.

    Run before Litestream and JuiceFS start on it, so the cleaned settings are what Litestream
    replicates next. secure_delete: SQLite overwrites the old row's bytes instead of leaving
    them in the page's free space, which Litestream would ship with the page.
    """
    with _metadata(db) as connection:
        connection.execute("PRAGMA secure_delete = ON")
        row = connection.execute("SELECT value FROM jfs_setting WHERE name = 'format'").fetchone()
        if row is None:
            return False
        value = row[0]
        text = value.decode() if isinstance(value, bytes) else value
        fmt = json.loads(text)
        cleaned = system.format_without_secrets(fmt)
        if cleaned == fmt:
            return False
        body = json.dumps(cleaned, indent=1)
        with connection:
            connection.execute("UPDATE jfs_setting SET value = ? WHERE name = 'format'",
                               (body.encode() if isinstance(value, bytes) else body,))
    logger.warning("removed the S3 keys an older agent left in %s's JuiceFS settings", db.stem)
    return True


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def _tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = f"{system.TAG_VARIABLE}=".encode()
    for item in environ:
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None


def owns(pid: int | None, tag: str) -> bool:
    """True when `pid` is alive and is the daemon tagged `tag` (system.daemon_tag).

    The check guards against signalling a recycled pid that now belongs to someone else.
    """
    if not pid:
        return False
    _reap(pid)
    return runner.pid_alive(pid) and _tag(pid) == tag


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def daemons(p: system.Paths, kind: str | None = None) -> list[int]:
    """Pids of this bucket's daemons (of one kind), found by their tag: works after a crash
    lost their pids, and finds a JuiceFS server its watchdog restarted."""
    kinds = [kind] if kind else [system.JUICEFS, system.LITESTREAM]
    tags = {system.daemon_tag(p, k) for k in kinds}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() \
                and _tag(int(entry.name)) in tags and runner.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def pid_stop(pid: int | None, tag: str, *, grace: float, sig: int = signal.SIGTERM) -> None:
    """Stop one of our daemons: `sig` to its process group, then SIGKILL after `grace`."""
    if not owns(pid, tag):
        return
    assert pid is not None
    runner.kill_group(pid, sig)
    if not runner.wait_until(lambda: not owns(pid, tag), timeout=grace, interval=0.1):
        logger.warning("pid %s did not stop within %ss; killing it", pid, grace)
        runner.kill_group(pid, signal.SIGKILL)
        runner.wait_until(lambda: not owns(pid, tag), timeout=10, interval=0.1)


def litestream_start(p: system.Paths) -> int:
    p.litestream_socket.parent.mkdir(parents=True, exist_ok=True)
    p.litestream_socket.unlink(missing_ok=True)
    env = system.litestream_env()
    env[system.TAG_VARIABLE] = system.daemon_tag(p, system.LITESTREAM)
    process = runner.spawn(system.litestream_replicate_argv(runner.tool("litestream"), p),
                           log_path=p.litestream_log, env=env)
    _children[process.pid] = process
    # Ready when its control socket listens (it then has opened the database).
    ready = runner.wait_until(
        lambda: p.litestream_socket.exists() or process.poll() is not None,
        timeout=settings.MOUNT_TIMEOUT_SECONDS, interval=0.05,
    )
    if not ready or process.poll() is not None:
        runner.stop(process, grace=5)
        tail = runner.log_tail(p.litestream_log, LOG_TAIL)
        raise MountFailed(f"Litestream did not start for {p.bucket}: {tail}")
    return process.pid


def litestream_sync(p: system.Paths, pid: int | None, *, timeout: int = 60) -> int:
    """Force a sync and wait until the replica holds the local database's last transaction.

    `sync -wait` answers with the local TXID at the time of its answer: a write that landed
    meanwhile (JuiceFS's, or Litestream's own bookkeeping after a `start`) leaves the replica
    one behind it. Synced again, the replica reaching that first TXID is enough: every write
    before the first call is in it.
    """
    if not owns(pid, system.daemon_tag(p, system.LITESTREAM)):
        raise SyncFailed(f"Litestream is not running for {p.bucket}; see {p.litestream_log}.")
    target: int | None = None
    for _ in range(3):
        try:
            result = runner.run(system.litestream_sync_argv(runner.tool("litestream"), p,
                                                            timeout=timeout),
                                env=system.litestream_env(), timeout=timeout + 10)
            status = json.loads(result.stdout)
        except (runner.CommandError, ValueError) as error:
            raise SyncFailed(f"Litestream could not sync {p.bucket}'s metadata: "
                             f"{error}") from error
        txid, replica = system.sync_txid(status.get("txid")), \
            system.sync_txid(status.get("replica_txid"))
        target = txid if target is None else target
        if replica >= target:
            return replica
    raise SyncFailed(f"Litestream's replica of {p.bucket} is behind ({status}).")


def _mountinfo() -> dict[str, tuple[str, str, str]]:
    """Mount point → (filesystem type, source, superblock options), from /proc/self/mountinfo;
    for a point mounted over, the topmost mount."""
    table = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            point = fields[4].encode().decode("unicode_escape")
            tail = line.split(" - ", 1)[1].split()
            tail += [""] * (3 - len(tail))
            table[point] = (tail[0], tail[1], tail[2])
    return table


def mount_table() -> dict[str, str]:
    """Mount points and their filesystem types, from /proc/self/mountinfo."""
    return {point: entry[0] for point, entry in _mountinfo().items()}


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


def juicefs_start(p: system.Paths, budget: system.Budget) -> int:
    p.volume_point.mkdir(parents=True, exist_ok=True)
    p.cache_dir.mkdir(parents=True, exist_ok=True)
    stats = os.statvfs(p.cache_dir)
    ratio = system.free_space_ratio(stats.f_blocks * stats.f_frsize)
    argv = system.juicefs_mount_argv(runner.tool("juicefs"), p, budget, free_ratio=ratio)
    env = system.juicefs_env(budget.buffer_size_mb)
    env[system.TAG_VARIABLE] = system.daemon_tag(p, system.JUICEFS)
    process = runner.spawn(argv, log_path=p.juicefs_log, env=env)
    _children[process.pid] = process
    ready = runner.wait_until(lambda: answers(p.volume_point) or process.poll() is not None,
                              timeout=settings.MOUNT_TIMEOUT_SECONDS, interval=0.1)
    if not ready or process.poll() is not None:
        runner.stop(process, grace=5)
        umount(p.volume_point, lazy=True)
        tail = runner.log_tail(p.juicefs_log, LOG_TAIL)
        raise MountFailed(f"JuiceFS did not mount {p.bucket}: {tail}")
    oom_score_adjust(daemons(p, system.JUICEFS))
    return process.pid


def oom_score_adjust(pids: list[int]) -> None:
    """Undo JuiceFS's own oom_score_adj of -1000 (storage hazard 7, docs/mounts.md) for its
    watchdog and server.

    A server its watchdog restarts sets -1000 again; the next mount or reconcile of the bucket
    sets it back."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/oom_score_adj").write_text(str(settings.JUICEFS_OOM_SCORE_ADJ))
        except OSError as error:  # gone meanwhile: reconcile deals with dead daemons
            logger.warning("oom_score_adj of juicefs pid %s not set: %s", pid, error)


def workspace_prepare(mount_point: Path) -> None:
    """A fresh volume's root belongs to the sandbox user, who runs previews and commands."""
    os.chown(mount_point, settings.SANDBOX_UID, settings.SANDBOX_UID)
    os.chmod(mount_point, 0o755)
    # A new ext4's lost+found: an empty workspace looks the same in both layouts (e2fsck makes
    # it again when a repair needs it).
    lost = mount_point / "lost+found"
    if lost.is_dir() and not lost.is_symlink() and not any(lost.iterdir()):
        lost.rmdir()


# ---------------------------------------------------------------------------------------------
# Durability and unmount
# ---------------------------------------------------------------------------------------------


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
    client = s3.client()

    def put(item: tuple[Path, str]) -> int:
        staged, key = item
        try:
            data = staged.read_bytes()
        except FileNotFoundError:
            return 0  # JuiceFS uploaded it (or the file was deleted) meanwhile
        client.put_object(Bucket=p.bucket, Key=key, Body=data)
        done.add(key)
        return 1

    try:
        # Small blocks: the time is in round trips, so many in flight.
        with ThreadPoolExecutor(max_workers=STAGED_UPLOAD_THREADS) as pool:
            return sum(pool.map(put, blocks))
    except (ClientError, BotoCoreError) as error:
        raise SyncFailed(f"Uploading staged blocks of {p.bucket} failed: {error}") from error


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


def teardown(p: system.Paths, *, juicefs_pid: int | None, litestream_pid: int | None,
             grace: float = 30) -> None:
    """Stop whatever runs for this bucket, without questions: the failure and crash path.

    Whatever the layout: an ext4 at the workspace and the loop devices over the image go first
    (the loop device must let go of the image before JuiceFS does, else its backing file is a
    file of a detached mount that no path names any more), then JuiceFS wherever it is mounted.
    """
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


def leftovers(p: system.Paths) -> bool:
    """True when anything of this bucket is on the machine: a mount, a daemon, a loop device."""
    table = mount_table()
    return (str(p.mount_point) in table or str(p.volume_dir) in table or bool(daemons(p))
            or bool(loop_devices(p.image)))


# ---------------------------------------------------------------------------------------------
# Image layout: ext4 in one sparse file of the JuiceFS volume, on a loop device
# ---------------------------------------------------------------------------------------------


def layout_record_read(bucket: str) -> str | None:
    """The layout recorded when the volume was made (system.LAYOUT_KEY); None for a volume
    made before the record existed."""
    try:
        body = s3.client().get_object(Bucket=bucket, Key=system.LAYOUT_KEY)["Body"].read()
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404"}:
            return None
        raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error
    try:
        return system.layout_parse(body.decode("utf-8", "replace"))
    except ValueError as error:
        # Only a holder of the S3 keys writes there: refuse rather than guess.
        raise MountFailed(f"{system.LAYOUT_KEY} in bucket {bucket!r} is invalid: {error}") \
            from error


def layout_record_write(bucket: str, layout: str) -> None:
    try:
        s3.client().put_object(Bucket=bucket, Key=system.LAYOUT_KEY, Body=layout.encode())
    except (ClientError, BotoCoreError) as error:
        raise _storage_error(error, bucket) from error


def _root_entries(connection: sqlite3.Connection, parent: int) -> dict[str, int]:
    rows = connection.execute("SELECT name, inode FROM jfs_edge WHERE parent = ?",
                              (parent,)).fetchall()
    return {bytes(name).decode("utf-8", "surrogateescape"): inode for name, inode in rows}


def _node(connection: sqlite3.Connection, inode: int | None) -> system.Node | None:
    if inode is None:
        return None
    row = connection.execute("SELECT type, mode, uid, gid FROM jfs_node WHERE inode = ?",
                             (inode,)).fetchone()
    return system.Node(*row) if row else None


def _metadata(db: Path) -> contextlib.closing[sqlite3.Connection]:
    # Read-write open although it only reads: nothing else has the database open yet, and a
    # read-only open of a WAL database without its -shm file fails.
    return contextlib.closing(sqlite3.connect(db))


def volume_empty(db: Path) -> bool:
    """True when the volume's root holds nothing (but JuiceFS's trash): a new volume, or one
    whose first mount stopped before anything was written. Read before it is mounted."""
    with _metadata(db) as connection:
        return not set(_root_entries(connection, system.ROOT_INODE)) - {".trash"}


def volume_layout_legacy(db: Path) -> str | None:
    """The layout of a volume made before the layout was recorded, from its metadata (read
    before it is mounted; see system.legacy_layout); None for an empty volume."""
    with _metadata(db) as connection:
        root = _root_entries(connection, system.ROOT_INODE)
        weldr = _node(connection, root.get(system.IMAGE_DIR))
        inside = _root_entries(connection, root[system.IMAGE_DIR]) \
            if system.IMAGE_DIR in root else {}
        image = _node(connection, inside.get(system.IMAGE_NAME))
    return system.legacy_layout(set(root), weldr, image)


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


def loop_detach(device: str) -> None:
    result = runner.run(system.losetup_detach_argv(device), timeout=60, check=False)
    if result.returncode != 0 and Path(f"/sys/block/{Path(device).name}/loop").exists():
        logger.warning("losetup --detach %s failed: %s", device, result.stderr.strip())


def image_mounted(p: system.Paths) -> bool:
    """True when the workspace is the image's ext4, mounted read-write (ext4 remounts itself
    read-only when the image's I/O fails, e.g. when JuiceFS died under the loop device)."""
    entry = _mountinfo().get(str(p.mount_point))
    return entry is not None and entry[0] == "ext4" and "rw" in entry[2].split(",")


def image_mount(p: system.Paths) -> None:
    """Check the image, attach it to a loop device and mount its ext4 at the workspace."""
    for device in loop_devices(p.image):
        # A crash between attaching and mounting left this one: never two devices on one image.
        logger.warning("detaching stale loop device %s of %s", device, p.bucket)
        loop_detach(device)
    # Always, not only after a restore: a crash or a lost machine leaves a journal to replay,
    # and on a clean filesystem it only reads the superblock.
    check = runner.run(system.e2fsck_argv(p.image), timeout=settings.MOUNT_TIMEOUT_SECONDS * 5,
                       check=False)
    if check.returncode:
        logger.warning("e2fsck -p on %s's image: exit %s: %s", p.bucket, check.returncode,
                       (check.stdout + check.stderr).strip()[-LOG_TAIL:])
    if not system.e2fsck_ok(check.returncode):
        raise MountFailed(f"The workspace image of {p.bucket} has errors e2fsck -p cannot fix "
                          f"(exit {check.returncode}): {(check.stdout + check.stderr)[-500:]}")
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
