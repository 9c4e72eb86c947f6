"""Better Auth as the Weldr platform deploys it, against a real agent configured the same way.

The real `better-auth` package runs with `advanced.cookiePrefix: "weldr"`, `basePath: "/auth"`,
plural tables and snake_case columns (tests/auth/conftest.py: DEPLOYED) on a database of its own,
migrated by Better Auth itself (the platform owns the tables). Its `timestamptz` columns are then
turned into `timestamp` (without time zone), the type a Drizzle schema's `timestamp("expires_at")`
gives them. A real agent (`manage.py serve`) with the same settings, BETTER_AUTH_CREATE_TABLES=0
as in production, authenticates every kind of credential Better Auth issues.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.auth.conftest import (
    DEPLOYED,
    BetterAuth,
    SignedUp,
    better_auth_server,
    new_databases,
    node,
)
from tests.conftest import AgentProcess
from tests.servers import free_port


@dataclass
class Deployed:
    agent: AgentProcess
    platform: BetterAuth
    database: str


def drizzle_timestamps(database: str) -> None:
    """Every `timestamptz` column becomes `timestamp`, as in a Drizzle-made schema."""
    with psycopg.connect(database, autocommit=True) as connection:
        columns = connection.execute(
            "select table_name, column_name from information_schema.columns"
            " where table_schema = 'public' and data_type = 'timestamp with time zone'"
        ).fetchall()
        assert columns, "Better Auth made no timestamptz column: nothing to turn"
        for table, column in columns:
            connection.execute(f'alter table "{table}" alter column "{column}" type timestamp')


def agent_env(tmp: Path, database: str, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "SHARED_TEST_DB_NAME"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "DATABASE_URL": database,
        "WELDR_ENV_VOL": str(tmp / "env"), "WORKSPACE_BASE": str(tmp / "workspace"),
        "WELDR_RUNTIME_DIR": str(tmp / "run"), "PREVIEW_WARM_POOL": "0",
        "BETTER_AUTH_CREATE_TABLES": "0", **extra,
    })
    return env


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deployed")
    with new_databases(1) as (database,):
        node("--migrate", database=database, config=DEPLOYED)
        drizzle_timestamps(database)
        with better_auth_server(database, tmp / "better-auth.log", DEPLOYED) as platform:
            env = agent_env(tmp, database, BETTER_AUTH_URL=platform.url, **DEPLOYED)
            agent = AgentProcess(env, free_port(), tmp / "agent.log")
            try:
                agent.start(timeout=120)
                yield Deployed(agent, platform, database)
            finally:
                agent.stop()
                agent.remove_leftovers()


@pytest.fixture
def user(deployed) -> SignedUp:
    return deployed.platform.sign_up()


def whoami(deployed: Deployed, headers: dict[str, str]) -> tuple[int, dict]:
    response = httpx.get(f"{deployed.agent.url}/whoami", headers=headers, timeout=30)
    return response.status_code, response.json()


def sql(deployed: Deployed, statement: str, *params: object) -> None:
    with psycopg.connect(deployed.database, autocommit=True) as connection:
        connection.execute(statement, params)


def test_the_platform_really_is_configured_that_way(deployed, user):
    assert user.cookie_name == "weldr.session_token"
    assert httpx.get(f"{deployed.platform.url}/api/auth/jwks").status_code == 404
    assert httpx.get(f"{deployed.platform.url}/auth/jwks").status_code == 200
    with psycopg.connect(deployed.database) as connection:
        row = connection.execute("select email_verified, pg_typeof(created_at)::text from users"
                                 " where id = %s", [user.user_id]).fetchone()
    assert row == (False, "timestamp without time zone")


@pytest.mark.parametrize("name", ["weldr.session_token", "__Secure-weldr.session_token"])
def test_the_weldr_session_cookie_is_accepted(deployed, user, name):
    status, body = whoami(deployed, {"Cookie": f"{name}={user.cookie}"})
    assert (status, body) == (200, {"kind": "session", "name": user.user_id,
                                    "user_id": user.user_id}), body


def test_better_auths_default_cookie_name_is_not_a_credential_here(deployed, user):
    status, body = whoami(deployed, {"Cookie": f"better-auth.session_token={user.cookie}"})
    assert (status, body["code"]) == (401, "not_authenticated")


@pytest.mark.parametrize("form", ["raw", "signed"])
def test_the_session_as_a_bearer_is_accepted(deployed, user, form):
    token = user.token if form == "raw" else unquote(user.cookie)
    status, body = whoami(deployed, {"Authorization": f"Bearer {token}"})
    assert (status, body["kind"], body["user_id"]) == (200, "session", user.user_id), body


def test_a_jwt_is_checked_against_the_jwks_under_the_base_path(deployed, user):
    token = deployed.platform.jwt(user.token)
    status, body = whoami(deployed, {"Authorization": f"Bearer {token}"})
    assert (status, body) == (200, {"kind": "jwt", "name": user.user_id,
                                    "user_id": user.user_id}), body


def test_an_api_key_is_accepted_and_a_disabled_or_expired_one_is_not(deployed, user):
    key = deployed.platform.api_key(user.user_id)
    status, body = whoami(deployed, {"x-api-key": key})
    assert (status, body["kind"], body["user_id"]) == (200, "api_key", user.user_id), body
    # an expiry in the future, in a `timestamp` column: still a credential
    sql(deployed, "update apikeys set expires_at = now() + interval '1 day'"
                  " where reference_id = %s", user.user_id)
    assert whoami(deployed, {"x-api-key": key})[0] == 200
    sql(deployed, "update apikeys set expires_at = now() - interval '1 minute'"
                  " where reference_id = %s", user.user_id)
    status, body = whoami(deployed, {"x-api-key": key})
    assert (status, body["code"], "expired" in body["detail"]) == (401, "not_authenticated", True)
    sql(deployed, "update apikeys set expires_at = null, enabled = false"
                  " where reference_id = %s", user.user_id)
    assert whoami(deployed, {"x-api-key": key})[0] == 401


def test_an_expired_session_is_401_and_a_signed_out_one_too(deployed, user):
    other = deployed.platform.sign_up()
    sql(deployed, "update sessions set expires_at = now() - interval '1 minute' where token = %s",
        user.token)
    for headers in ({"Cookie": f"weldr.session_token={user.cookie}"},
                    {"Authorization": f"Bearer {user.token}"}):
        status, body = whoami(deployed, headers)
        assert (status, body["code"]) == (401, "not_authenticated"), headers
    assert whoami(deployed, {"Authorization": f"Bearer {other.token}"})[0] == 200
    deployed.platform.sign_out(other.token)
    assert whoami(deployed, {"Authorization": f"Bearer {other.token}"})[0] == 401


@pytest.mark.parametrize(("cookie", "close_code"), [("weldr.session_token", 4404),
                                                     ("better-auth.session_token", 4401)])
def test_a_websocket_handshake_takes_the_weldr_cookie(deployed, user, cookie, close_code):
    # An unknown branch: 4404 once authenticated, 4401 before (weldr_agent/ws_auth.py).
    url = f"ws://127.0.0.1:{deployed.agent.port}/ws/events/no-project/no-branch"
    with ws_connect(url, additional_headers={"Cookie": f"{cookie}={user.cookie}"},
                    open_timeout=30) as socket:
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=30)
        assert socket.close_code == close_code
