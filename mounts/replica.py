"""The zero-RPO sync, and the check that makes its promise true: the replica's newest state is
restored aside and checked before the sync answers; a bad one is replaced by a fresh snapshot.

Why: Litestream 0.5.17 now and then ships an incremental LTX file whose pages are not a
consistent state of the database it copies while another connection (JuiceFS) writes it —
upstream issue #1164 (open), pull request #1337 (closed); reproduced by
bench/bench_replica.py within seconds, seen about once in 15 runs of the machine-loss test. The
local database stays sound; the replica is damaged from that file on, so a new machine would
restore a database that fails its integrity check, or fall back to an older state and lose
the writes a zero-RPO sync had promised (docs/snapshots.md, "The metadata replica").

So `durable` does not answer on Litestream's word alone. It restores the state Litestream
confirmed (exactly that TXID) beside the database and checks it as a new machine would (both
integrity checks). On failure, Litestream writes a snapshot (level 9) from the local database:
a restore then starts from that snapshot and never reads the damaged file. The snapshot is
checked in turn (it is read while JuiceFS writes, and can come out damaged as well), taken
again up to SNAPSHOT_ATTEMPTS times; then the sync fails (SyncFailed: nothing is promised).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from mounts import steps, system
from mounts.errors import SyncFailed
from weldr_agent import runner

logger = logging.getLogger("weldr.mounts")

CONTROL_TIMEOUT = 60  # seconds for Litestream's stop (its final sync) and start
# Fresh snapshots tried before a zero-RPO sync gives up (SyncFailed): under a continuous writer
# about one in five came out damaged too (bench/bench_replica.py); three in a row, rarely.
SNAPSHOT_ATTEMPTS = 3


def durable(p: system.Paths, litestream_pid: int | None) -> datetime:
    """Make every write so far durable in S3 (zero RPO); return the moment that holds up to.

    Order matters: a metadata transaction names blocks that were staged before it committed,
    so after the forced Litestream sync a second pass over the staging folder finds every
    block the replicated metadata can name. The replica's state is confirmed sound before the
    moment is taken and written as the durability marker (a restore on a new machine starts
    at or after it).
    """
    if p.layout == system.IMAGE and steps.image_mounted(p):
        steps.image_flush(p)
    if steps.is_mounted(p.volume_point):
        steps.filesystem_sync(p.volume_point)
    steps.staged_upload(p)
    confirm(p, litestream_pid, steps.litestream_sync(p, litestream_pid))
    point = datetime.now(UTC)
    steps.staged_upload(p)
    try:
        steps.durable_marker_write(p.bucket, point)
    except (ClientError, BotoCoreError) as error:
        raise SyncFailed(f"Writing {p.bucket}'s durability marker failed: {error}") from error
    return point


def state_problem(p: system.Paths, txid: int) -> str | None:
    """What is wrong with the replica's state at `txid`, restored aside; None when it is sound.

    The same restore and the same two checks as a new machine's (steps.restore_into), into a
    file beside the database that is removed after.
    """
    aside = p.meta_db.with_name(f"{p.meta_db.name}.verifying")
    try:
        failure = steps.restore_into(p, aside, txid=txid)
        if failure is None and not aside.exists():
            failure = f"the replica cannot rebuild TXID {txid:x}"
        return failure
    finally:
        steps.db_remove(aside)


def snapshot_fresh(p: system.Paths) -> None:
    """Have Litestream write a new snapshot (level 9) of the local database to the replica.

    The daemon keeps running (its pid is recorded): it lets go of the database (`stop`, after
    a final sync), a one-shot `replicate -once -force-snapshot` with the socket off writes the
    snapshot, and the daemon takes the database back (`start`). JuiceFS writes on meanwhile.
    """
    litestream = runner.tool("litestream")
    env = system.litestream_env()
    # Not `litestream-*.yml`: start-up's clean-up reads bucket names from those.
    once = p.litestream_config.with_name(f"snapshot-{p.litestream_config.name}")
    once.write_text(system.litestream_config(p, socket=False))
    try:
        runner.run(system.litestream_control_argv(litestream, p, "stop",
                                                  timeout=CONTROL_TIMEOUT),
                   env=env, timeout=CONTROL_TIMEOUT + 10)
        runner.run(system.litestream_snapshot_argv(litestream, once), env=env,
                   timeout=CONTROL_TIMEOUT)
    except runner.CommandError as error:
        raise SyncFailed(f"Litestream could not write a fresh snapshot of {p.bucket}'s "
                         f"metadata: {error}") from error
    finally:
        once.unlink(missing_ok=True)
        # Whatever failed: a daemon that let go of the database (even a `stop` that timed out
        # after doing so) must take it back, or the bucket goes unreplicated with its pid alive.
        _start(p, litestream, env)


def _start(p: system.Paths, litestream: str, env: dict[str, str]) -> None:
    try:
        result = runner.run(system.litestream_control_argv(litestream, p, "start",
                                                           timeout=CONTROL_TIMEOUT),
                            env=env, timeout=CONTROL_TIMEOUT + 10)
        state = json.loads(result.stdout or "{}").get("state")
    except (runner.CommandError, ValueError) as error:
        raise SyncFailed(f"Litestream did not take {p.bucket}'s metadata back after the "
                         f"snapshot: {error}") from error
    if state != "running":
        raise SyncFailed(f"Litestream did not take {p.bucket}'s metadata back after the "
                         f"snapshot (state {state!r}).")


def confirm(p: system.Paths, litestream_pid: int | None, txid: int) -> int:
    """Return once the replica's state at `txid` (or a later one: the TXID returned) restores
    sound; else raise SyncFailed.

    A fresh snapshot is read while JuiceFS writes too, and can itself come out damaged
    (bench/bench_replica.py, under a continuous writer): it is checked like any state, and
    taken again up to SNAPSHOT_ATTEMPTS times.
    """
    problem = state_problem(p, txid)
    if problem is None:
        return txid
    logger.error("METADATA REPLICA DAMAGED: %s's replica at TXID %x (just confirmed by "
                 "Litestream) does not restore sound: %s. Writing a fresh snapshot from the "
                 "local database.", p.bucket, txid, problem)
    for attempt in range(1, SNAPSHOT_ATTEMPTS + 1):
        snapshot_fresh(p)
        newest = steps.litestream_sync(p, litestream_pid)
        problem = state_problem(p, newest)
        if problem is None:
            logger.error("METADATA REPLICA REPAIRED: %s's replica restores sound at TXID %x "
                         "from a fresh snapshot (attempt %d); the damaged files before it are "
                         "no longer on any restore path to it.", p.bucket, newest, attempt)
            return newest
        logger.error("METADATA REPLICA DAMAGED: %s's fresh snapshot (TXID %x, attempt %d of "
                     "%d) does not restore sound either: %s", p.bucket, newest, attempt,
                     SNAPSHOT_ATTEMPTS, problem)
    raise SyncFailed(f"{p.bucket}'s metadata replica still does not restore sound after "
                     f"{SNAPSHOT_ATTEMPTS} fresh snapshots (TXID {newest:x}): {problem}")
