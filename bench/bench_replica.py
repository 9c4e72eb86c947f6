"""Reproduce Litestream 0.5.17 shipping a damaged metadata replica, and measure the check that
keeps the zero-RPO promise (mounts/replica.py).

Part 1 (the reproducer): a SQLite database with JuiceFS-like tables (a primary key and a
secondary index on each) written continuously by one connection — small transactions, SQLite's
default auto-checkpoint of 1,000 pages — while the real Litestream replicates it into the real
(local) S3. Each round forces a sync (`litestream sync -wait`, as the zero-RPO sync does), then
restores the replica's state at the TXID Litestream confirmed, beside the database, and runs
both integrity checks. Run four times in the same process, on fresh buckets:
  old sync: the sync alone (the code before mounts/replica.py): how many confirmed states are bad;
  new sync: the sync, then replica.confirm (check; fresh snapshot when bad): how many are bad;
  old config: Litestream's default checkpoints; new config: scripts/litestream-template.yml's
  (Litestream checkpoints long before the writer's own auto-checkpoint threshold).
A last run, old, with the writer's own auto-checkpoint off, shows the trigger.
Part 2 (cost on a real mount): a real JuiceFS mount (files layout); rounds that write files then
run the zero-RPO sync without the check (the old steps.durable) and with it, alternated.

Usage: .venv/bin/python bench/bench_replica.py [--seconds 60] [--rounds 15] [--files 2000]
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def writer(db: Path, stop: threading.Event, pause: float, autocheckpoint: int) -> None:
    """JuiceFS-like metadata writes: a node row and a chunk row per file, some deletes.

    `autocheckpoint`: the connection's own checkpoint threshold in pages (SQLite's default and
    JuiceFS's: 1000; JuiceFS's driver has no setting to change it). 0: it never checkpoints.
    """
    connection = sqlite3.connect(db, isolation_level=None, timeout=30)
    connection.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint)}")
    inode = 0
    while not stop.is_set():
        connection.execute("BEGIN IMMEDIATE")
        for _ in range(1 + inode % 17):
            inode += 1
            connection.execute("INSERT INTO node VALUES (?, ?, ?, ?)",
                               (inode, f"f{inode}", inode % 50, os.urandom(60)))
            connection.execute("INSERT OR REPLACE INTO chunk VALUES (?, 0, ?)",
                               (inode % 3000, os.urandom(20 + inode % 380)))
        if inode % 5 == 0:
            connection.execute("DELETE FROM node WHERE inode IN "
                               "(SELECT inode FROM node ORDER BY random() LIMIT 5)")
        connection.execute("COMMIT")
        time.sleep(pause)
    connection.close()


def database(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE node (inode INTEGER PRIMARY KEY, name TEXT, "
                           "parent INTEGER, attr BLOB)")
        connection.execute("CREATE INDEX node_parent ON node (parent, name)")
        connection.execute("CREATE TABLE chunk (inode INTEGER, indx INTEGER, slices BLOB, "
                           "PRIMARY KEY (inode, indx))")
        connection.execute("CREATE UNIQUE INDEX uqe_chunk ON chunk (inode, indx)")


def old_template() -> str:
    """The Litestream config before its checkpoint settings (Litestream's defaults)."""
    from mounts import system

    return "".join(line for line in system.TEMPLATE.read_text().splitlines(keepends=True)
                   if not (line.startswith("    #") or "min-checkpoint-page-count" in line
                           or "monitor-interval" in line))


def reproduce(mode: str, seconds: float, pause: float, autocheckpoint: int = 1000,
              config: str = "new") -> dict[str, object]:
    from mounts import replica, steps, system
    from mounts.errors import SyncFailed

    bucket = f"bench-rep-{secrets.token_hex(4)}"
    steps.ensure_bucket(bucket)
    p = system.paths(bucket)
    database(p.meta_db)
    steps.litestream_config_write(p)
    if config == "old":
        p.litestream_config.write_text(system.litestream_config(p, template=old_template()))
    pid = steps.litestream_start(p)
    stop = threading.Event()
    thread = threading.Thread(target=writer, args=(p.meta_db, stop, pause, autocheckpoint))
    thread.start()
    rounds = bad = repairs = failed = 0
    first_bad: int | None = None
    times: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            rounds += 1
            started = time.monotonic()
            try:
                txid = steps.litestream_sync(p, pid)
                if mode == "new":
                    confirmed = replica.confirm(p, pid, txid)
                    repairs += confirmed != txid
                    txid = confirmed
            except SyncFailed as error:
                failed += 1
                benchlib.log(f"{mode}: sync failed: {error}")
                continue
            times.append(time.monotonic() - started)
            if replica.state_problem(p, txid) is not None:
                bad += 1
                first_bad = rounds if first_bad is None else first_bad
    finally:
        stop.set()
        thread.join()
        steps.pid_stop(pid, system.daemon_tag(p, system.LITESTREAM), grace=30)
    return {"rounds": rounds, "bad": bad, "first_bad": first_bad, "repairs": repairs,
            "failed": failed, "times": times,
            "live": steps.integrity_problem(p.meta_db) or "ok"}


def old_durable(p) -> None:  # type: ignore[no-untyped-def]
    """The zero-RPO sync before mounts/replica.py (files layout): no check of the replica."""
    from mounts import steps

    steps.filesystem_sync(p.volume_point)
    steps.staged_upload(p)
    steps.litestream_sync(p, steps.daemons(p, "litestream")[0])
    steps.staged_upload(p)
    steps.durable_marker_write(p.bucket, datetime.now(UTC))


class Repairs(logging.Handler):
    """Counts the fresh snapshots the zero-RPO syncs took (mounts/replica.py's ERROR lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("METADATA REPLICA REPAIRED")


def cost(rounds: int, files: int) -> tuple[list[float], list[float]]:
    from mounts import services, system

    bucket = f"bench-rep-{secrets.token_hex(4)}"
    mount, _ = services.mount_create(bucket=bucket)
    workspace = Path(mount.path)
    p = system.paths(bucket)
    before: list[float] = []
    after: list[float] = []
    try:
        for index in range(files):
            (workspace / f"seed{index % 40}").mkdir(exist_ok=True)
            (workspace / f"seed{index % 40}" / f"f{index}.ts").write_text(f"export {index}\n")
        services.mount_sync(bucket=bucket)
        for index in range(rounds * 2):
            for n in range(50):
                (workspace / f"round{index}-{n}.ts").write_text(f"// {index} {n}\n" * 20)
            started = time.monotonic()
            if index % 2:
                services.mount_sync(bucket=bucket)
                after.append(time.monotonic() - started)
            else:
                old_durable(p)
                before.append(time.monotonic() - started)
    finally:
        services.mount_remove(bucket=bucket)
    return before, after


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"p50 {statistics.median(values) * 1000:6.0f} ms  p90 {p90 * 1000:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="length of each reproducer run (old, then new)")
    parser.add_argument("--pause", type=float, default=0.01,
                        help="the writer's pause between transactions, seconds")
    parser.add_argument("--rounds", type=int, default=15,
                        help="zero-RPO syncs of each kind on the real mount")
    parser.add_argument("--files", type=int, default=2000,
                        help="files on the real mount before the cost rounds")
    args = parser.parse_args()
    with benchlib.Cleanup() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="weldr-bench-replica-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)  # last: after the servers stop
        server = benchlib.start_s3(stack, tmp)
        os.environ.update({
            "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
            "WELDR_ENV_VOL": str(tmp / "vol"), "WORKSPACE_BASE": str(tmp / "ws"),
            "WELDR_RUNTIME_DIR": str(tmp / "run"), "S3_ACCESS_KEY_ID": benchlib.KEY_ID,
            "S3_SECRET_ACCESS_KEY": benchlib.SECRET, "S3_ENDPOINT": server.endpoint,
            "LOG_LEVEL": "CRITICAL", "LITESTREAM_SYNC_INTERVAL": "1s",
        })
        os.environ.pop("DATABASE_URL", None)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        settings.WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)
        settings.WORKSPACE_LAYOUT = "files"
        call_command("migrate", database="default", verbosity=0)
        print(f"Litestream 0.5.17, sync-interval 1s, S3 {server.endpoint} (rclone, loopback); "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"\n1. Reproducer: {args.seconds:.0f} s each, writer pause "
              f"{args.pause * 1000:.0f} ms")
        for mode, config, autocheckpoint in (("old", "old", 1000), ("old", "new", 1000),
                                             ("new", "new", 1000), ("old", "old", 0)):
            r = reproduce(mode, args.seconds, args.pause, autocheckpoint, config)
            print(f"  {mode} sync, {config} config, writer's autocheckpoint {autocheckpoint}: "
                  f"{r['rounds']} syncs, "
                  f"{r['bad']} confirmed states restore damaged "
                  f"(first at sync {r['first_bad']}), {r['repairs']} fresh snapshots, "
                  f"{r['failed']} syncs failed; sync {ms(r['times'])}; live database {r['live']}",
                  flush=True)
        print(f"\n2. Zero-RPO sync on a real JuiceFS mount ({args.files} files, 50 new files "
              f"before each sync, {args.rounds} of each, alternated)")
        repairs = Repairs()
        logging.getLogger("weldr.mounts").addHandler(repairs)
        before, after = cost(args.rounds, args.files)
        print(f"  fresh snapshots taken by the checked syncs: {repairs.count}")
        print(f"  without the check (before): {ms(before)}")
        print(f"  with the check (after):     {ms(after)}")
        added = statistics.median(after) - statistics.median(before)
        print(f"  added, p50: {added * 1000:.0f} ms")


if __name__ == "__main__":
    main()
