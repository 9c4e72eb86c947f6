"""Start-up checks Better Auth's tables against the settings, and says what is missing.

The platform's database is made by the real Better Auth as deployed (DEPLOYED: plural tables,
snake_case columns); the agent is started with settings that do not match it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from django.db import connections
from django.db.utils import ConnectionHandler

from tests.auth.conftest import DEPLOYED, new_databases, node
from tests.auth.test_deployed import agent_env
from tests.conftest import AgentProcess
from tests.servers import free_port
from weldr_agent import runner
from weldr_agent.betterauth.checks import schema_check

REPO = Path(__file__).resolve().parent.parent.parent
PLURAL_TABLES = {"BETTER_AUTH_TABLES": DEPLOYED["BETTER_AUTH_TABLES"]}


@pytest.fixture(scope="module")
def platform_database() -> Iterator[str]:
    """A database whose Better Auth tables the real package made, configured as deployed."""
    with new_databases(1) as (database,):
        node("--migrate", database=database, config=DEPLOYED)
        yield database


def manage(tmp: Path, database: str, *args: str, **settings: str) -> runner.Completed:
    """`manage.py <args>` with the agent's settings plus `settings`, on `database`."""
    (tmp / "env").mkdir(exist_ok=True)
    return runner.run([sys.executable, REPO / "manage.py", *args],
                      env=agent_env(tmp, database, **settings), timeout=120, check=False, cwd=REPO)


def test_start_up_refuses_columns_named_otherwise_and_says_which_setting(platform_database,
                                                                         tmp_path):
    # given the platform's snake_case columns, and an agent left at camelCase
    agent = AgentProcess(agent_env(tmp_path, platform_database, **PLURAL_TABLES), free_port(),
                         tmp_path / "agent.log")
    # when it starts, then it refuses, naming the setting, the table and the columns
    with pytest.raises(RuntimeError, match="agent did not start"):
        agent.start(timeout=60)
    log = agent.log.read_text()
    assert "ImproperlyConfigured" in log
    assert 'table "users" lacks column(s) emailVerified, createdAt, updatedAt' in log
    assert "BETTER_AUTH_COLUMNS=camelCase; the platform may use snake_case" in log
    assert agent.stop() != 0


def test_missing_tables_are_named_with_the_setting_to_change(platform_database, tmp_path):
    # an agent with Better Auth's default table names, on the platform's plural tables
    result = manage(tmp_path, platform_database, "better_auth_check",
                    BETTER_AUTH_COLUMNS="snake_case")
    assert result.returncode != 0
    # the core tables must be there; a plugin's (apikey) may be absent, so it is not named
    for model in ("user", "session", "jwks", "apikey"):
        expected = f'table "{model}" (Better Auth model {model}) does not exist'
        assert (expected in result.stderr) == (model in ("user", "session")), result.stderr
    assert "set BETTER_AUTH_TABLES=user=<its table>" in result.stderr


def test_a_platform_without_the_api_key_plugin_starts_and_refuses_api_keys(tmp_path):
    # given the platform's tables without the api-key plugin's
    with new_databases(1) as (database,):
        node("--migrate", database=database, config=DEPLOYED)
        with psycopg.connect(database, autocommit=True) as connection:
            connection.execute("drop table apikeys")
        agent = AgentProcess(agent_env(tmp_path, database, **DEPLOYED), free_port(),
                             tmp_path / "agent.log")
        try:
            # when the agent starts, then it does, and says what it will not accept
            agent.start(timeout=60)
            assert 'Better Auth has no table "apikeys"' in agent.log.read_text()
            response = httpx.get(f"{agent.url}/whoami", headers={"x-api-key": "k" * 64})
        finally:
            agent.stop()
            agent.remove_leftovers()
    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
    assert "no API key table" in response.json()["detail"]


def test_with_the_settings_right_the_check_passes(platform_database, tmp_path):
    result = manage(tmp_path, platform_database, "better_auth_check", **DEPLOYED)
    assert result.returncode == 0, result.stderr
    assert "session: sessions (id, expires_at, token, created_at, updated_at, ip_address, " \
           "user_agent, user_id)" in result.stdout
    assert "apikey: apikeys (id, config_id, name, start, reference_id," in result.stdout


def test_production_creates_no_table_under_a_wrong_name(tmp_path):
    # given an empty database and the production default (BETTER_AUTH_CREATE_TABLES=0)
    with new_databases(1) as (database,):
        migrate = manage(tmp_path, database, "migrate", "betterauth", "--database", "shared")
        assert migrate.returncode == 0, migrate.stderr
        # then the agent made no table: the check names what the platform must provide
        result = manage(tmp_path, database, "better_auth_check")
    assert result.returncode != 0
    assert 'table "user" (Better Auth model user) does not exist' in result.stderr


def test_an_unreachable_shared_database_does_not_stop_start_up(caplog):
    # given a shared database nobody listens for
    unreachable = dict(connections["shared"].settings_dict, PORT=str(free_port()),
                       OPTIONS={"connect_timeout": 5})
    handler = ConnectionHandler({"default": unreachable})
    started = time.monotonic()
    # when start-up checks Better Auth's tables, then it goes on, and says it could not check
    with caplog.at_level(logging.WARNING, logger="weldr.betterauth"):
        schema_check(handler["default"])
    assert time.monotonic() - started < 5
    assert "could not be checked" in caplog.text


@pytest.mark.parametrize(("name", "value"), [
    ("BETTER_AUTH_TABLES", "users=user"), ("BETTER_AUTH_TABLES", 'user=us"ers'),
    ("BETTER_AUTH_COLUMNS", "kebab-case"), ("BETTER_AUTH_COOKIE_PREFIX", "we ldr"),
    ("BETTER_AUTH_BASE_PATH", "auth"), ("BETTER_AUTH_CREATE_TABLES", "maybe"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, name, value):
    result = manage(tmp_path, "", "check", **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr.splitlines()[-1]
