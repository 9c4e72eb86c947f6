"""Machine loss with a damaged metadata replica: the new machine restores the newest state
that passes both integrity checks, says so in the log, and never mounts a damaged database.

The damage is made for real: a state whose index and table disagree (what SQLite reports as
"wrong # of entries in index", the failure seen in tests/mounts/test_snapshots_durability.py),
shipped by the real Litestream into the real S3 replica; or the replica's newest LTX files
overwritten with garbage.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from mounts import steps, system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean, read_tree, write_tree
from tests.mounts.test_durability import lose_the_machine
from weldr_agent import s3


def _index_and_table_disagree(db: Path) -> None:
    """Commit a state in which an index no longer matches its table: two tables, an index on
    the first, then the first pointed at the second's b-tree (SQLite's writable_schema). JuiceFS
    never reads these tables; SQLite's checks reject the whole database. One transaction: a
    state with the tables but not yet the damage is sound, and Litestream (syncing every
    second) could ship it, and the restore rightly choose it."""
    connection = sqlite3.connect(db, isolation_level=None)
    try:
        connection.execute("PRAGMA writable_schema = ON")
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("CREATE TABLE weldr_damage (id INTEGER PRIMARY KEY, v)")
        connection.execute("CREATE INDEX weldr_damage_v ON weldr_damage (v)")
        connection.execute("CREATE TABLE weldr_damage_other (id INTEGER PRIMARY KEY, v)")
        connection.executemany("INSERT INTO weldr_damage (v) VALUES (?)",
                               [(i,) for i in range(50)])
        connection.executemany("INSERT INTO weldr_damage_other (v) VALUES (?)",
                               [(i,) for i in range(5)])
        other = connection.execute("SELECT rootpage FROM sqlite_schema "
                                   "WHERE name = 'weldr_damage_other'").fetchone()[0]
        connection.execute("UPDATE sqlite_schema SET rootpage = ? WHERE name = 'weldr_damage'",
                           (other,))
        connection.execute("COMMIT")
    finally:
        connection.close()


def _ship(bucket: str) -> None:
    """Litestream's own sync (as every LITESTREAM_SYNC_INTERVAL), confirmed; not the zero-RPO
    endpoint, so the durability marker stays before the damage."""
    mount = Mount.objects.get(bucket=bucket)
    steps.litestream_sync(system.paths(bucket, mount.layout), mount.litestream_pid)


def _replica_files(bucket: str) -> list[str]:
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{system.REPLICA_PATH}/")
    return sorted(item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(
        ".ltx"))


def _garble(bucket: str, keys: list[str], *, step: int = 97) -> None:
    """Overwrite LTX files with damaged copies of themselves, keeping their metadata (Litestream
    reads a file's time from it) so that the restore point still selects them. Every `step`th
    byte after the header is flipped (a small file needs a small step to be damaged for sure)."""
    client = s3.client()
    for key in keys:
        stored = client.get_object(Bucket=bucket, Key=key)
        body = bytearray(stored["Body"].read())
        for offset in range(120, len(body), step):
            body[offset] ^= 0x5A
        client.put_object(Bucket=bucket, Key=key, Body=bytes(body),
                          Metadata=stored.get("Metadata", {}))


def _newest_files_garbled(bucket: str, *, step: int = 97) -> list[str]:
    """Garble every LTX file that ends at the replica's newest TXID (any level)."""
    keys = _replica_files(bucket)
    newest = max(os.path.basename(key).split("-")[1] for key in keys)
    garbled = [key for key in keys if os.path.basename(key).split("-")[1] == newest]
    _garble(bucket, garbled, step=step)
    return garbled


def test_a_replica_whose_newest_state_is_damaged_restores_the_newest_sound_one(api, bucket,
                                                                                caplog):
    # given a workspace made durable, then a damaged metadata state shipped to the replica
    mount = api.post("/mounts", {"bucket": bucket}, format="json").json()
    tree = write_tree(Path(mount["path"]), files=30)
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    _index_and_table_disagree(system.paths(bucket).meta_db)
    _ship(bucket)
    # when the machine is lost and a new one mounts the bucket
    lose_the_machine(bucket)
    caplog.set_level(logging.WARNING, logger="weldr.mounts")
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then it mounts the state before the damage: every file back, the damage absent
    assert again.status_code == 201, again.json()
    assert again.json()["restored"] is True
    assert read_tree(Path(again.json()["path"]), tree) == tree
    meta_db = system.paths(bucket).meta_db
    assert steps.integrity_problem(meta_db) is None
    with sqlite3.connect(meta_db) as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_schema")}
    assert "weldr_damage" not in names
    # and the log says what happened, where an operator looks
    messages = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(m.startswith(f"METADATA RESTORE FAILED for {bucket}")
               and "integrity check failed" in m for m in messages), messages
    older = [m for m in messages if m.startswith("METADATA RESTORED FROM AN OLDER STATE")]
    assert len(older) == 1 and "zero-RPO" not in older[0], messages


def test_a_replica_whose_newest_files_are_garbled_restores_the_state_before(api, bucket,
                                                                             caplog):
    # given a durable workspace whose replica's newest files were overwritten with garbage
    mount = api.post("/mounts", {"bucket": bucket}, format="json").json()
    tree = write_tree(Path(mount["path"]), files=30)
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    (Path(mount["path"]) / "later.txt").write_text("written after the sync\n")
    _ship(bucket)
    # (before the lease wait of the machine loss: the restore point must still include them)
    assert _newest_files_garbled(bucket)
    lose_the_machine(bucket)
    # when a new machine mounts it
    caplog.set_level(logging.WARNING, logger="weldr.mounts")
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then the synced tree is back, from an older state, and the log says so
    assert again.status_code == 201, again.json()
    assert read_tree(Path(again.json()["path"]), tree) == tree
    messages = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(m.startswith("METADATA RESTORED FROM AN OLDER STATE") for m in messages), messages


def test_a_replica_with_no_sound_state_is_never_mounted(api, bucket):
    # given a replica every LTX file of which is garbled (no state can be rebuilt sound)
    mount = api.post("/mounts", {"bucket": bucket}, format="json").json()
    (Path(mount["path"]) / "precious.txt").write_text("do not lose me\n")
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    _garble(bucket, _replica_files(bucket))
    lose_the_machine(bucket)
    keys = _replica_files(bucket)
    # when a new machine mounts it
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    # then a clear 500, nothing mounted or left running, no metadata in place, the replica kept
    assert response.status_code == 500, response.json()
    assert response.json()["code"] == "mount_failed"
    assert "refusing to mount a damaged one" in response.json()["detail"]
    assert machine_clean(bucket)
    assert not Mount.objects.filter(bucket=bucket).exists()
    assert not system.paths(bucket).meta_db.exists()
    assert _replica_files(bucket) == keys
