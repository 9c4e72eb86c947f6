"""The agent's mirror of Better Auth's tables is exactly what Better Auth's migrations create.

Two fresh PostgreSQL databases: in one the agent's migration runs first, in the other Better
Auth's own. Both end with the same columns, types, defaults, constraints and indexes, and
Better Auth's planner finds nothing left to do after the agent's migration.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.auth.conftest import database_url, node
from weldr_agent import runner

REPO = Path(__file__).resolve().parent.parent.parent
TABLES = ("user", "session", "account", "verification", "jwks", "apikey")


@pytest.fixture
def fresh_databases() -> Iterator[list[str]]:
    names = [f"weldr_schema_{os.getpid()}_{secrets.token_hex(3)}" for _ in range(2)]
    admin = database_url(name="postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in names:
            connection.execute(f'create database "{name}"')
    try:
        yield [database_url(name=name) for name in names]
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            for name in names:
                connection.execute(f'drop database if exists "{name}" with (force)')


def agent_migrate(url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHARED_TEST_DB_NAME"}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "DATABASE_URL": url,
                "WELDR_ENV_VOL": str(tmp_path / "env")})
    runner.run([sys.executable, REPO / "manage.py", "migrate", "betterauth", "--database",
                "shared", "--verbosity", "0"], env=env, timeout=120, cwd=REPO)


def better_auth_plan(url: str) -> dict:
    return json.loads(node("--plan", database=url).stdout.strip().splitlines()[-1])


def describe(url: str) -> dict:
    """Columns (type, nullability, default), constraints and indexes of Better Auth's tables."""
    with psycopg.connect(url) as connection:
        columns = connection.execute(
            "select table_name, column_name, data_type, is_nullable, column_default"
            " from information_schema.columns where table_schema = 'public'"
            " and table_name = any(%s) order by table_name, ordinal_position", [list(TABLES)],
        ).fetchall()
        constraints = connection.execute(
            "select conrelid::regclass::text, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = any(select oid from pg_class where relname = any(%s)"
            " and relnamespace = 'public'::regnamespace) order by 1, 2", [list(TABLES)],
        ).fetchall()
        indexes = connection.execute(
            "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'"
            " and tablename = any(%s) order by 1, 2", [list(TABLES)]).fetchall()
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def test_agent_first_then_better_auth_finds_nothing_to_do(fresh_databases, tmp_path):
    ours_first, theirs_first = fresh_databases
    # given the agent's migration on an empty database
    agent_migrate(ours_first, tmp_path)
    # then Better Auth's own planner wants no change at all
    plan = better_auth_plan(ours_first)
    assert plan == {"to_be_created": [], "to_be_added": [], "to_be_added_indexes": [],
                    "schema_problems": [], "sql": ""}
    # and its migration leaves the schema exactly as Better Auth alone would have made it
    node("--migrate", database=ours_first)
    node("--migrate", database=theirs_first)
    assert describe(ours_first) == describe(theirs_first)


def test_better_auth_first_then_the_agent_leaves_its_tables_alone(fresh_databases, tmp_path):
    theirs_first, reference = fresh_databases
    node("--migrate", database=theirs_first)
    node("--migrate", database=reference)
    # given a user Better Auth's tables already hold
    with psycopg.connect(theirs_first) as connection:
        connection.execute(
            """insert into "user" (id, name, email, "emailVerified")"""
            """ values ('u1', 'U', 'u@x', false)""")
    # when the agent migrates
    agent_migrate(theirs_first, tmp_path)
    # then nothing changed, rows included
    assert describe(theirs_first) == describe(reference)
    with psycopg.connect(theirs_first) as connection:
        assert connection.execute('select email from "user"').fetchall() == [("u@x",)]
    assert better_auth_plan(theirs_first)["to_be_created"] == []
