"""The volume's metadata database: reused, restored from its Litestream replica, or formatted;
and what the agent reads in it before JuiceFS mounts it (empty? which layout?).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from mounts import system
from mounts.errors import MountFailed, ReplicaMissing, VolumeGone
from mounts.steps.bucket import durable_marker_read, prefix_empty, volume_present
from weldr_agent import runner

logger = logging.getLogger("weldr.mounts")


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


def db_remove(db: Path) -> None:
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


def restore_into(p: system.Paths, output: Path, *, point: datetime | None = None,
             txid: int | None = None) -> str | None:
    """Restore one state of the replica into `output` and check it: None when `output` holds
    a sound database (or nothing matched), else what went wrong (and `output` is removed)."""
    db_remove(output)
    try:
        runner.run(system.litestream_restore_argv(runner.tool("litestream"), p, timestamp=point,
                                                  txid=txid, output=output),
                   env=system.litestream_env(), timeout=settings.MOUNT_TIMEOUT_SECONDS)
    except runner.CommandError as error:
        db_remove(output)
        return str(error)
    problem = integrity_problem(output) if output.exists() else None
    if problem is not None:
        db_remove(output)
        return f"integrity check failed: {problem}"
    return None



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
    """restore_into, where "nothing matched" is a failure too: the state was asked for by name."""
    failure = restore_into(p, staging, **target)
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
    failure = restore_into(p, staging, point=point)
    if failure is None and not staging.exists() and point is not None:
        # Nothing in the replica is that old: the volume is younger than the upload delay and
        # was never synced with zero RPO. The latest state is the best there is; blocks it
        # names that never left the lost machine read as EIO (`juicefs fsck` lists them).
        logger.warning("no metadata of %s as old as %s; restoring the latest", p.bucket, point)
        point = None
        failure = restore_into(p, staging)
    if failure is not None:
        _restore_fallback(p, staging, point, durable_at, failure)
    if not staging.exists():
        raise MountFailed(f"Litestream found no usable backup of {p.bucket}'s metadata; see "
                          f"{system.REPLICA_PATH} in the bucket.")
    chunk_counter_advance(staging)
    db_remove(p.meta_db)
    staging.rename(p.meta_db)
    db_remove(staging)
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
        raise ReplicaMissing(
            f"Bucket {p.bucket!r} holds a JuiceFS volume but its metadata replica "
            f"({system.REPLICA_PATH}) is missing; refusing to format over it. If another "
            "machine mounted it moments ago, its first replica is not uploaded yet: try again "
            "in a few seconds. Otherwise the volume's metadata is lost."
        )
    juicefs = runner.tool("juicefs")
    try:
        runner.run(system.juicefs_format_argv(juicefs, p), env=system.juicefs_env(),
                   timeout=settings.MOUNT_TIMEOUT_SECONDS)
    except runner.CommandError as error:
        db_remove(p.meta_db)
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
