"""Secrets at rest: the S3 keys are never in a volume's JuiceFS metadata, so never in the bucket.

The metadata database is replicated into the bucket by Litestream: whatever JuiceFS keeps in
its settings (`jfs_setting`, the volume's format) ends up readable by anyone who can read the
bucket's `weldr-meta/` objects or restore them. `juicefs format` used to store the access key
and the secret key there in clear (it takes them from ACCESS_KEY/SECRET_KEY); JuiceFS's
`--encrypt-secret` would only encrypt them with a key derived from the volume's UUID, which sits
next to them in the same settings. So the keys are not stored at all: JuiceFS gets them from
its environment at every run (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the S3 client's own
chain), and a volume made before has them removed from its settings on its next mount.

Checked for real: a mount, a write, a zero-RPO sync, then the metadata restored from the bucket
with `litestream restore` and grepped byte for byte, and the bucket's objects themselves; plus
JuiceFS's `.config` virtual file at a `files` workspace's root, from inside a real exec sandbox
(unreadable) and as root on the host (no key in it).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mounts import system
from tests.conftest import AgentProcess, agent_client, running_agent
from weldr_agent import runner, s3

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("secrets-agent"), WORKSPACE_LAYOUT="files",
                             LITESTREAM_SYNC_INTERVAL="1s")


@pytest.fixture(scope="module")
def http(agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(agent)


@pytest.fixture
def bucket(http: httpx.Client) -> Iterator[str]:
    name = f"sec-{secrets.token_hex(4)}"
    yield name
    http.post("/mounts/unmount", json={"bucket": name, "force": True})
    client = s3.client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    except Exception:  # never made
        pass


def _keys() -> dict[str, bytes]:
    from django.conf import settings

    return {"secret key": settings.S3_SECRET_ACCESS_KEY.encode(),
            "access key": settings.S3_ACCESS_KEY_ID.encode()}


def _agent_paths(agent: AgentProcess, bucket: str) -> system.Paths:
    vol = Path(agent.env["WELDR_ENV_VOL"])
    return dataclasses.replace(system.paths(bucket), meta_db=vol / "meta" / f"{bucket}.db",
                               mount_point=Path(agent.env["WORKSPACE_BASE"]) / bucket)


def _mount_write_sync(http: httpx.Client, bucket: str) -> None:
    mounted = http.post("/mounts", json={"bucket": bucket, "layout": "files"})
    assert mounted.status_code in (200, 201), mounted.text
    written = http.put(f"/files/{bucket}/content", params={"path": "notes.txt"},
                       content=b"some work\n")
    assert written.status_code == 200, written.text
    synced = http.post(f"/mounts/{bucket}/sync")
    assert synced.status_code == 200, synced.text


def _replica_restored(bucket: str, folder: Path) -> bytes:
    """The bytes of the metadata database as `litestream restore` rebuilds it from the bucket
    (with its -wal, should one be left)."""
    p = dataclasses.replace(system.paths(bucket), litestream_config=folder / "litestream.yml",
                            meta_db=folder / "meta.db")
    p.litestream_config.write_text(system.litestream_config(p))
    output = folder / "restored.db"
    runner.run(system.litestream_restore_argv(runner.tool("litestream"), p, timestamp=None,
                                              output=output),
               env=system.litestream_env(), timeout=120)
    assert output.exists()
    data = b"".join(Path(f"{output}{suffix}").read_bytes() for suffix in ("", "-wal")
                    if Path(f"{output}{suffix}").exists())
    with sqlite3.connect(output) as connection:
        # sanity: it is the volume's metadata, and it has our file
        names = {bytes(row[0]) for row in connection.execute("SELECT name FROM jfs_edge")}
    assert b"notes.txt" in names
    return data + b"\n" + _format_keys(_format_setting(output))


def _format_keys(setting: bytes) -> bytes:
    """The keys the volume's settings hold, in clear: JuiceFS's "encrypted" secret
    (KeyEncrypted, the default of `juicefs format` 1.4) is AES-GCM under md5(UUID), and the UUID
    is in the same settings — anyone holding them holds the secret."""
    fmt = json.loads(setting)
    found = [fmt.get("AccessKey", ""), fmt.get("SessionToken", "")]
    secret = fmt.get("SecretKey", "")
    if secret and fmt.get("KeyEncrypted"):
        sealed = base64.b64decode(secret)
        secret = AESGCM(hashlib.md5(fmt["UUID"].encode()).digest()).decrypt(
            sealed[:12], sealed[12:], None).decode()
    return "\n".join([*found, secret]).encode()


def _bucket_objects(bucket: str) -> dict[str, bytes]:
    """Every object of the bucket's metadata area (`weldr-meta/`), as stored."""
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                  Prefix="weldr-meta/"):
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=bucket,
                                                   Key=item["Key"])["Body"].read()
    assert any(key.startswith(system.REPLICA_PATH) for key in found), sorted(found)
    # Litestream stores pages uncompressed: a grep of the objects can see the settings' text.
    assert any(b'"TrashDays"' in body for body in found.values()), sorted(found)
    return found


def _assert_no_key(data: bytes, where: str) -> None:
    for name, key in _keys().items():
        assert key not in data, f"the S3 {name} is in {where}"


def test_the_replicated_metadata_holds_no_s3_key(http: httpx.Client, bucket: str,
                                                 tmp_path: Path):
    # given a new volume, mounted, written and synced (its metadata is in the bucket)
    _mount_write_sync(http, bucket)
    # when the metadata is restored from the bucket as another machine would
    restored = _replica_restored(bucket, tmp_path)
    # then neither key is anywhere in its bytes, nor in the bucket's metadata objects
    _assert_no_key(restored, "the metadata restored from the bucket")
    for key, body in _bucket_objects(bucket).items():
        _assert_no_key(body, f"s3://{bucket}/{key}")


def test_config_file_is_unreadable_in_the_sandbox_and_holds_no_key(
        http: httpx.Client, agent: AgentProcess, bucket: str):
    # given a files workspace (its root is JuiceFS's root, with the virtual `.config`)
    _mount_write_sync(http, bucket)
    # when the sandbox reads it
    inside = http.post("/exec", json={"bucket": bucket, "timeout": 60,
                                      "command": "ls -ln .config; cat .config"}).json()
    # then it cannot
    assert inside["exit_code"] != 0, inside
    assert "Permission denied" in inside["stderr"], inside
    assert "SecretKey" not in inside["stdout"] and "Bucket" not in inside["stdout"], inside
    # and what root reads there names no key either
    config = (_agent_paths(agent, bucket).mount_point / ".config").read_bytes()
    assert b'"Format"' in config and bucket.encode() in config, config[:300]
    _assert_no_key(config, ".config")


def test_a_volume_that_stored_the_keys_loses_them_on_its_next_mount(
        http: httpx.Client, agent: AgentProcess, bucket: str, tmp_path: Path):
    # given a volume formatted the way the agent used to (keys in ACCESS_KEY / SECRET_KEY,
    # which `juicefs format` stores in the volume's settings)
    p = _agent_paths(agent, bucket)
    p.meta_db.parent.mkdir(parents=True, exist_ok=True)
    s3.client().create_bucket(Bucket=bucket)
    keys = _keys()
    runner.run(system.juicefs_format_argv(runner.tool("juicefs"), p),
               env={**system.juicefs_env(), "ACCESS_KEY": keys["access key"].decode(),
                    "SECRET_KEY": keys["secret key"].decode()},
               timeout=120)
    assert keys["secret key"] in _format_keys(_format_setting(p.meta_db))
    # and replicated into the bucket that way
    _replicate_once(bucket, p.meta_db)
    assert any(keys["access key"] in body for body in _bucket_objects(bucket).values())
    # when it is mounted, written and synced
    _mount_write_sync(http, bucket)
    # then its settings hold no key any more (the mount works with the keys of its environment)
    setting = json.loads(_format_setting(p.meta_db))
    assert not {"AccessKey", "SecretKey", "SessionToken"} & set(setting), setting
    # and the metadata restored from the bucket holds none either (the older replica files
    # still do, until Litestream's retention drops them: docs/mounts.md, "Secrets at rest")
    _assert_no_key(_replica_restored(bucket, tmp_path), "the metadata restored from the bucket")


def _replicate_once(bucket: str, db: Path) -> None:
    """Ship `db` into the bucket's replica as the agent's Litestream does, then stop."""
    folder = Path(tempfile.mkdtemp(prefix="ls-"))  # a control socket path fits in 108 bytes
    p = dataclasses.replace(system.paths(bucket), meta_db=db,
                            litestream_config=folder / "l.yml", litestream_log=folder / "l.log",
                            litestream_socket=folder / "l.sock")
    p.litestream_config.write_text(system.litestream_config(p))
    process = runner.spawn(system.litestream_replicate_argv(runner.tool("litestream"), p),
                           log_path=p.litestream_log, env=system.litestream_env())
    try:
        assert runner.wait_until(p.litestream_socket.exists, timeout=30), \
            p.litestream_log.read_text()
        runner.run(system.litestream_sync_argv(runner.tool("litestream"), p, timeout=60),
                   env=system.litestream_env(), timeout=70)
    finally:
        runner.stop(process, grace=10)
        shutil.rmtree(folder, ignore_errors=True)


def _format_setting(db: Path) -> bytes:
    with sqlite3.connect(db) as connection:
        row = connection.execute("SELECT value FROM jfs_setting WHERE name = 'format'").fetchone()
    value = row[0]
    return value if isinstance(value, bytes) else value.encode()
