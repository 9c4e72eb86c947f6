"""Real services for the test suite: PostgreSQL, Redis and an S3 server, started on demand.

`tests.settings` calls `ensure()` before Django reads its settings, so every test (and every
agent process a test starts) sees the same DATABASE_URL, REDIS_URL and S3_* variables.

PostgreSQL and Redis already listening on 127.0.0.1:5432/6379 are used when they accept us;
otherwise throwaway servers from Debian's packages are started on free loopback ports in a
temporary folder and stopped when the test run ends (atexit), whatever the outcome.

Under `pytest -n N` (pytest-xdist) the controller starts them once and its workers inherit their
addresses; each worker gets its own test databases, channel prefix, state, workspace and runtime
folders and so its own INSTANCE_ID (PER_PROCESS).
"""

from __future__ import annotations

import atexit
import logging
import os
import pwd
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from weldr_agent import runner
from weldr_agent.s3 import LocalS3Server, port_open

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TEST_ACCESS_KEY = "weldrtestaccesskey" + secrets.token_hex(4)
TEST_SECRET_KEY = "weldrtestsecretkey" + secrets.token_hex(12)
_cleanups: list = []
# What `ensure()` sets for one test process alone (the servers are shared with its xdist workers).
PER_PROCESS = ("SHARED_TEST_DB_NAME", "CHANNEL_LAYER_PREFIX", "WELDR_ENV_VOL", "WORKSPACE_BASE",
               "WELDR_RUNTIME_DIR", "WELDR_INSTANCE_ID")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_all() -> None:
    # pytest has closed the streams logging writes to by the time atexit runs.
    logging.disable(logging.CRITICAL)
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as error:  # keep stopping the rest
            print(f"tests.servers: cleanup failed: {error}")


atexit.register(_stop_all)


def _postgres_accepts(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2):
            return True
    except Exception:
        return False


def start_postgres(root: Path) -> str:
    """initdb + pg_ctl start as the `postgres` system user, trust auth on a loopback port."""
    user = pwd.getpwnam("postgres")
    data = root / "pg"
    data.mkdir(parents=True)
    os.chown(root, user.pw_uid, user.pw_gid)
    os.chown(data, user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    runner.run([*as_postgres, PG_BIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres",
                "--no-sync"], timeout=120)
    port = free_port()
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off " \
              "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    runner.run([*as_postgres, PG_BIN / "pg_ctl", "-D", data, "-o", options, "-l",
                root / "pg.log", "-w", "-t", "60", "start"], timeout=90)
    _cleanups.append(lambda: runner.run(
        [*as_postgres, PG_BIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"],
        timeout=60, check=False))
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def start_redis(root: Path) -> str:
    port = free_port()
    process = runner.spawn(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(root)],
        log_path=root / "redis.log",
    )
    _cleanups.append(lambda: runner.stop(process, grace=5))
    if not runner.wait_until(lambda: port_open("127.0.0.1", port), timeout=20):
        raise RuntimeError(f"redis-server did not start; see {root / 'redis.log'}")
    return f"redis://127.0.0.1:{port}/0"


def start_s3(root: Path) -> LocalS3Server:
    server = LocalS3Server(root=root / "s3", port=free_port(), key_id=TEST_ACCESS_KEY,
                           secret=TEST_SECRET_KEY)
    server.start()
    _cleanups.append(server.stop)
    return server


def ensure() -> None:
    """Start what is missing and export its address; idempotent within one process."""
    if os.environ.get("WELDR_TEST_SERVICES") == str(os.getpid()):
        return
    if os.environ.get("PYTEST_XDIST_WORKER") and "WELDR_TEST_SERVICES" in os.environ:
        # A worker of `pytest -n N` inherits its controller's environment: it shares the
        # controller's PostgreSQL, Redis and S3 server, but not what is one process's own (test
        # databases, channel prefix, state, workspaces, runtime directory and with it
        # INSTANCE_ID, so netns, firewall chains and cgroups): two workers must not collide.
        for name in PER_PROCESS:
            os.environ.pop(name, None)
    root = Path(tempfile.mkdtemp(prefix="weldr-test-"))
    _cleanups.insert(0, lambda: shutil.rmtree(root, ignore_errors=True))

    if "DATABASE_URL" not in os.environ:
        existing = "postgres://postgres@127.0.0.1:5432/postgres"
        if port_open("127.0.0.1", 5432) and _postgres_accepts(existing):
            os.environ["DATABASE_URL"] = existing
        else:
            os.environ["DATABASE_URL"] = start_postgres(root)
    # A unique test database per run: parallel runs against one server must not collide.
    os.environ.setdefault("SHARED_TEST_DB_NAME", f"test_weldr_{os.getpid()}")

    if "REDIS_URL" not in os.environ:
        os.environ["REDIS_URL"] = (
            "redis://127.0.0.1:6379/0" if port_open("127.0.0.1", 6379) else start_redis(root)
        )
    os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"weldrtest{os.getpid()}")

    if "S3_ENDPOINT" not in os.environ:
        server = start_s3(root)
        os.environ["S3_ENDPOINT"] = server.endpoint
        os.environ["S3_ACCESS_KEY_ID"] = server.key_id
        os.environ["S3_SECRET_ACCESS_KEY"] = server.secret
        os.environ["WELDR_TEST_S3_ROOT"] = str(server.root / "data")

    os.environ.setdefault("WELDR_ENV_VOL", str(root / "env"))
    os.environ.setdefault("WORKSPACE_BASE", str(root / "workspace"))
    os.environ.setdefault("WELDR_RUNTIME_DIR", f"/run/weldr-test-{os.getpid()}")
    _cleanups.insert(1, lambda: shutil.rmtree(os.environ["WELDR_RUNTIME_DIR"],
                                              ignore_errors=True))
    os.environ.setdefault("BETTER_AUTH_SECRET", "weldr-test-better-auth-secret-0123456789")
    os.environ["WELDR_TEST_SERVICES"] = str(os.getpid())


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the test run's PostgreSQL (its URL), dropped afterwards."""
    import psycopg

    base = os.environ["DATABASE_URL"]
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_bucket(prefix: str) -> Iterator[str]:
    """A new bucket on the test run's S3 server, emptied and removed afterwards."""
    from weldr_agent import s3

    name = f"{prefix}-{secrets.token_hex(6)}"
    client = s3.client()
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
