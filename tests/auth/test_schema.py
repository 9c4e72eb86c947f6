"""The agent's mirror of Better Auth's tables is exactly what Better Auth's migrations create.

Two fresh PostgreSQL databases: in one the agent's migration runs first, in the other Better
Auth's own. Both end with the same columns, types, defaults, constraints and indexes, and
Better Auth's planner finds nothing left to do after the agent's migration. Each test runs with
Better Auth's defaults and as the platform deploys it (DEPLOYED: plural tables, snake_case
columns), the same variables configuring the agent and the real package.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.auth.conftest import DEPLOYED, new_databases, node
from weldr_agent import runner

REPO = Path(__file__).resolve().parent.parent.parent
MODELS = ("user", "session", "account", "verification", "jwks", "apikey")
CONFIGS = {"defaults": {}, "deployed": DEPLOYED}


def tables(config: dict[str, str]) -> dict[str, str]:
    """model -> table under that configuration."""
    items = filter(None, config.get("BETTER_AUTH_TABLES", "").split(","))
    named = dict(item.split("=") for item in items)
    return {model: named.get(model, model) for model in MODELS}


@pytest.fixture(params=list(CONFIGS))
def config(request) -> dict[str, str]:
    return CONFIGS[request.param]


@pytest.fixture
def fresh_databases() -> Iterator[list[str]]:
    with new_databases(2) as urls:
        yield urls


def agent_manage(url: str, tmp_path: Path, config: dict[str, str], *args: str,
                 check: bool = True) -> runner.Completed:
    env = {k: v for k, v in os.environ.items() if k != "SHARED_TEST_DB_NAME"}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "DATABASE_URL": url,
                "WELDR_ENV_VOL": str(tmp_path / "env"), **config})
    return runner.run([sys.executable, REPO / "manage.py", *args], env=env, timeout=120,
                      cwd=REPO, check=check)


def agent_migrate(url: str, tmp_path: Path, config: dict[str, str]) -> None:
    agent_manage(url, tmp_path, config, "migrate", "betterauth", "--database", "shared",
                 "--verbosity", "0")


def better_auth_plan(url: str, config: dict[str, str]) -> dict:
    return json.loads(node("--plan", database=url, config=config).stdout.strip().splitlines()[-1])


def describe(url: str, config: dict[str, str]) -> dict:
    """Columns (type, nullability, default), constraints and indexes of Better Auth's tables."""
    names = list(tables(config).values())
    with psycopg.connect(url) as connection:
        columns = connection.execute(
            "select table_name, column_name, data_type, is_nullable, column_default"
            " from information_schema.columns where table_schema = 'public'"
            " and table_name = any(%s) order by table_name, ordinal_position", [names],
        ).fetchall()
        constraints = connection.execute(
            "select conrelid::regclass::text, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = any(select oid from pg_class where relname = any(%s)"
            " and relnamespace = 'public'::regnamespace) order by 1, 2", [names],
        ).fetchall()
        indexes = connection.execute(
            "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'"
            " and tablename = any(%s) order by 1, 2", [names]).fetchall()
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def test_agent_first_then_better_auth_finds_nothing_to_do(fresh_databases, tmp_path, config):
    ours_first, theirs_first = fresh_databases
    # given the agent's migration on an empty database
    agent_migrate(ours_first, tmp_path, config)
    # then Better Auth's own planner, configured the same way, wants no change at all
    plan = better_auth_plan(ours_first, config)
    assert plan == {"to_be_created": [], "to_be_added": [], "to_be_added_indexes": [],
                    "schema_problems": [], "sql": ""}
    # and its migration leaves the schema exactly as Better Auth alone would have made it
    node("--migrate", database=ours_first, config=config)
    node("--migrate", database=theirs_first, config=config)
    assert describe(ours_first, config) == describe(theirs_first, config)
    assert describe(ours_first, config)["columns"], "the tables are where the config says"


def test_better_auth_first_then_the_agent_leaves_its_tables_alone(fresh_databases, tmp_path,
                                                                   config):
    theirs_first, reference = fresh_databases
    node("--migrate", database=theirs_first, config=config)
    node("--migrate", database=reference, config=config)
    user = tables(config)["user"]
    verified = "email_verified" if config else "emailVerified"
    # given a user Better Auth's tables already hold
    with psycopg.connect(theirs_first) as connection:
        connection.execute(f"""insert into "{user}" (id, name, email, "{verified}")"""
                           """ values ('u1', 'U', 'u@x', false)""")
    # when the agent migrates
    agent_migrate(theirs_first, tmp_path, config)
    # then nothing changed, rows included
    assert describe(theirs_first, config) == describe(reference, config)
    with psycopg.connect(theirs_first) as connection:
        assert connection.execute(f'select email from "{user}"').fetchall() == [("u@x",)]
    assert better_auth_plan(theirs_first, config)["to_be_created"] == []
    # and every column the agent's mirror reads is there, under the configured names
    checked = agent_manage(theirs_first, tmp_path, config, "better_auth_check")
    assert f"user: {user} (id, name, email, {verified}," in checked.stdout
