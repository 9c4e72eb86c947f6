"""The real Better Auth (tests/js, npm `better-auth`) on the test PostgreSQL, for tests/auth."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import quote

import httpx
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


def node_env(database: str) -> dict[str, str]:
    return runner.clean_env({"DATABASE_URL": database,
                             "BETTER_AUTH_SECRET": settings.BETTER_AUTH_SECRET})


def node(*args: str, database: str, timeout: float = 120) -> runner.Completed:
    return runner.run(["node", SERVER, *args], env=node_env(database), timeout=timeout, cwd=JS)


@dataclass(frozen=True)
class SignedUp:
    user_id: str
    email: str
    token: str
    set_cookie: str

    @property
    def cookie(self) -> str:
        """The value of the `better-auth.session_token` cookie Better Auth set (URL-encoded)."""
        jar = SimpleCookie()
        jar.load(self.set_cookie)
        return jar["better-auth.session_token"].value


class BetterAuth:
    """A running `better_auth_server.mjs`: Better Auth's real endpoints plus test helpers."""

    def __init__(self, url: str) -> None:
        self.url = url
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
        response = self.http.get("/api/auth/token",
                                 headers={"Authorization": f"Bearer {session_token}"})
        response.raise_for_status()
        return response.json()["token"]

    def sign_jwt(self, payload: dict) -> str:
        """A JWT with an arbitrary payload, signed with the platform's real JWKS key."""
        return self._post("/test/sign-jwt", {"payload": payload})["token"]

    def sign_out(self, session_token: str) -> None:
        response = self.http.post("/api/auth/sign-out", json={}, headers={
            "Authorization": f"Bearer {session_token}", "Origin": self.url,
        })
        response.raise_for_status()

    def get_session(self, credential_headers: dict[str, str]) -> dict | None:
        response = self.http.get("/api/auth/get-session", headers=credential_headers)
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: dict) -> dict:
        response = self.http.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="session")
def better_auth(django_db_setup, tmp_path_factory) -> Iterator[BetterAuth]:
    """Better Auth 1.7.25 with the bearer, jwt and api-key plugins on the test database.

    Session-scoped and torn down before the test databases are dropped (it holds connections).
    """
    log = tmp_path_factory.mktemp("better-auth") / "better-auth.log"
    process = runner.spawn(["node", SERVER], env=node_env(database_url()), log_path=log, cwd=JS)

    def ready() -> dict | None:
        for line in log.read_text().splitlines():
            if line.startswith("{") and '"ready"' in line:
                return json.loads(line)
        return None

    try:
        if not runner.wait_until(lambda: ready() or process.poll() is not None, timeout=90) \
                or process.poll() is not None:
            raise RuntimeError(f"Better Auth did not start:\n{log.read_text()[-3000:]}")
        server = BetterAuth(ready()["url"])
        yield server
        server.http.close()
    finally:
        runner.stop(process, grace=10)


@pytest.fixture
def user(better_auth: BetterAuth) -> SignedUp:
    return better_auth.sign_up()


@pytest.fixture(scope="module")
def module_agent(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A real agent (`manage.py serve`) shared by a module's tests; yields (url, agent token).

    Like tests/conftest.py's `agent_process` (its own data directories, a SQLite shared
    database), but started once: fuzzing restarts nothing between operations.
    """
    import os

    from tests.conftest import AgentProcess
    from tests.services import free_port

    root = tmp_path_factory.mktemp("agent")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "workspace"),
                "WELDR_RUNTIME_DIR": str(root / "run")})
    agent = AgentProcess(env, free_port(), root / "agent.log")
    (root / "env").mkdir()
    agent.manage("migrate", "--database", "default", "--verbosity", "0")
    token = agent.manage("create_api_token", "--name", "fuzz").stdout.split()[-1]
    try:
        agent.start()
        yield agent.url, token
    finally:
        agent.stop()
