"""The real Better Auth (tests/js, npm `better-auth`) on the test PostgreSQL, for tests/auth."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import connections

from weldr_agent import runner

JS = Path(__file__).resolve().parent.parent / "js"
SERVER = JS / "better_auth_server.mjs"


def database_url(alias: str = "shared", name: str | None = None) -> str:
    """A postgres:// URL for a Django connection (by default the test database in use)."""
    db = connections[alias].settings_dict
    credentials = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}"
                                                      if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/" \
           f"{name or db['NAME']}"


# Better Auth as the Weldr platform deploys it (docs/foundation.md, "Better Auth as deployed"):
# the same variables configure the test server (better_auth_server.mjs) and the agent.
DEPLOYED = {
    "BETTER_AUTH_COOKIE_PREFIX": "weldr",
    "BETTER_AUTH_BASE_PATH": "/auth",
    "BETTER_AUTH_TABLES": "user=users,session=sessions,account=accounts,"
                          "verification=verifications,apikey=apikeys",
    "BETTER_AUTH_COLUMNS": "snake_case",
}


def node_env(database: str, config: dict[str, str] | None = None) -> dict[str, str]:
    return runner.clean_env({"DATABASE_URL": database,
                             "BETTER_AUTH_SECRET": settings.BETTER_AUTH_SECRET, **(config or {})})


def node(*args: str, database: str, config: dict[str, str] | None = None,
         timeout: float = 120) -> runner.Completed:
    return runner.run(["node", SERVER, *args], env=node_env(database, config), timeout=timeout,
                      cwd=JS)


@contextmanager
def new_databases(count: int) -> Iterator[list[str]]:
    """`count` new, empty PostgreSQL databases on the test server, dropped afterwards."""
    names = [f"weldr_ba_{os.getpid()}_{secrets.token_hex(3)}" for _ in range(count)]
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


@dataclass(frozen=True)
class SignedUp:
    user_id: str
    email: str
    token: str
    set_cookie: str

    @property
    def cookie_name(self) -> str:
        """The session cookie's name as Better Auth set it (`<cookiePrefix>.session_token`)."""
        jar = SimpleCookie()
        jar.load(self.set_cookie)
        return next(name for name in jar if name.endswith(".session_token"))

    @property
    def cookie(self) -> str:
        """The value of the session cookie Better Auth set (URL-encoded)."""
        jar = SimpleCookie()
        jar.load(self.set_cookie)
        return jar[self.cookie_name].value


class BetterAuth:
    """A running `better_auth_server.mjs`: Better Auth's real endpoints plus test helpers."""

    def __init__(self, url: str, base_path: str = "/api/auth") -> None:
        self.url = url
        self.base_path = base_path
        self.http = httpx.Client(base_url=url, timeout=30)

    def sign_up(self) -> SignedUp:
        email = f"user-{secrets.token_hex(6)}@example.com"
        body = self._post("/test/sign-up", {"email": email, "password": secrets.token_hex(12)})
        return SignedUp(user_id=body["user_id"], email=email, token=body["token"],
                        set_cookie=body["set_cookie"])

    def api_key(self, user_id: str) -> str:
        return self._post("/test/api-key", {"user_id": user_id})["key"]

    def jwt(self, session_token: str) -> str:
        """A JWT from Better Auth's own `/api/auth/token` endpoint for that session."""
        response = self.http.get(f"{self.base_path}/token",
                                 headers={"Authorization": f"Bearer {session_token}"})
        response.raise_for_status()
        return response.json()["token"]

    def sign_jwt(self, payload: dict) -> str:
        """A JWT with an arbitrary payload, signed with the platform's real JWKS key."""
        return self._post("/test/sign-jwt", {"payload": payload})["token"]

    def sign_out(self, session_token: str) -> None:
        response = self.http.post(f"{self.base_path}/sign-out", json={}, headers={
            "Authorization": f"Bearer {session_token}", "Origin": self.url,
        })
        response.raise_for_status()

    def get_session(self, credential_headers: dict[str, str]) -> dict | None:
        response = self.http.get(f"{self.base_path}/get-session", headers=credential_headers)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict) -> dict:
        response = self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()


@contextmanager
def better_auth_server(database: str, log: Path,
                       config: dict[str, str] | None = None) -> Iterator[BetterAuth]:
    """Run better_auth_server.mjs on `database`, configured by `config` (e.g. DEPLOYED)."""
    process = runner.spawn(["node", SERVER], env=node_env(database, config), log_path=log, cwd=JS)

    def ready() -> dict | None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"ready"' in line:
                return json.loads(line)
        return None

    try:
        if not runner.wait_until(lambda: ready() or process.poll() is not None, timeout=90) \
                or process.poll() is not None:
            raise RuntimeError(f"Better Auth did not start:\n{log.read_text()[-3000:]}")
        server = BetterAuth(ready()["url"],
                            (config or {}).get("BETTER_AUTH_BASE_PATH", "/api/auth"))
        yield server
        server.http.close()
    finally:
        runner.stop(process, grace=10)


@pytest.fixture(scope="session")
def better_auth(django_db_setup, tmp_path_factory) -> Iterator[BetterAuth]:
    """Better Auth 1.7.25 with the bearer, jwt and api-key plugins on the test database.

    Session-scoped and torn down before the test databases are dropped (it holds connections).
    """
    log = tmp_path_factory.mktemp("better-auth") / "better-auth.log"
    with better_auth_server(database_url(), log) as server:
        yield server


@pytest.fixture
def user(better_auth: BetterAuth) -> SignedUp:
    return better_auth.sign_up()


@pytest.fixture(scope="module")
def module_agent(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A real agent (`manage.py serve`) shared by a module's tests; yields (url, agent token).

    Like tests/conftest.py's `agent_process` (its own data directories, a SQLite shared
    database), but started once: fuzzing restarts nothing between operations.
    """
    from tests.conftest import AgentProcess
    from tests.servers import free_port

    root = tmp_path_factory.mktemp("agent")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "workspace"),
                "WELDR_RUNTIME_DIR": str(root / "run"),
                # GET /health is fuzzed too: its first round imports the S3 and Redis clients,
                # more than the production 0.8 s on a loaded machine (a 503 "still checking").
                "HEALTH_CHECK_TIMEOUT_SECONDS": "20"})
    agent = AgentProcess(env, free_port(), root / "agent.log")
    try:
        agent.start()  # `serve` migrates its new state database itself
        token = agent.manage("create_api_token", "--name", "fuzz").stdout.split()[-1]
        yield agent.url, token
    finally:
        agent.stop()
