"""Cross-site websocket hijacking and CORS: a page of another origin (a preview app on another
port of the agent's host, any web site) cannot use the browser's session cookie on the events
websocket, and CORS answers only the configured origins.

A real agent (`manage.py serve`) on the test PostgreSQL, a real Better Auth session cookie
(tests/js), a real websocket client sending the Origin a browser would send.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.auth.conftest import SignedUp, better_auth, database_url, user  # noqa: F401
from tests.conftest import REPO, AgentProcess, agent_env
from tests.servers import free_port
from weldr_agent import runner

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(300)]

PLATFORM = "https://platform.example"
PREVIEW = "http://127.0.0.1:3000"  # a preview app on the agent's host: another origin


@pytest.fixture(scope="module")
def agent(django_db_setup: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent for the module: its tests only open sockets and preflights against it (each
    test signs up its own user and makes its own project)."""
    root = tmp_path_factory.mktemp("origin-agent")
    process = AgentProcess(agent_env(root, DATABASE_URL=database_url(), CORS_ORIGIN=PLATFORM,
                                     BETTER_AUTH_SECRET=settings.BETTER_AUTH_SECRET),
                           free_port(), root / "agent.log")
    try:
        process.start(timeout=120)
        yield process
    finally:
        process.stop()
        process.remove_leftovers()


@pytest.fixture
def branch(agent: AgentProcess, user: SignedUp) -> tuple[str, str]:  # noqa: F811
    """A project of `user` and its branch, made through the API with the user's cookie."""
    cookies = {"better-auth.session_token": user.cookie}
    with httpx.Client(base_url=agent.url, cookies=cookies, headers={"Origin": PLATFORM},
                      timeout=30) as http:
        project = http.post("/projects", json={"name": "mine"})
        assert project.status_code == 201, project.text
        made = http.post(f"/projects/{project.json()['id']}/branches",
                         json={"name": "main", "bucket": "origin-test"})
        assert made.status_code == 201, made.text
    return project.json()["id"], made.json()["id"]


def _close_code(agent: AgentProcess, path: str, headers: dict[str, str]) -> int | None:
    """The socket's close code, or None when it stays open (accepted and streaming)."""
    with ws_connect(f"ws://127.0.0.1:{agent.port}{path}", additional_headers=headers,
                    open_timeout=30) as socket:
        try:
            socket.recv(timeout=3)
        except TimeoutError:
            return None
        except ConnectionClosed:
            return socket.close_code
        return None


def test_a_cookie_websocket_from_a_foreign_origin_is_refused(agent, user, branch):  # noqa: F811
    project_id, branch_id = branch
    path = f"/ws/events/{project_id}/{branch_id}"
    cookie = {"Cookie": f"better-auth.session_token={user.cookie}"}

    # a page of another origin (a preview, a web site) opening the socket with the cookie
    assert _close_code(agent, path, {**cookie, "Origin": PREVIEW}) == 4403
    assert _close_code(agent, path, {**cookie, "Origin": "https://evil.example"}) == 4403
    # the platform's origin and the agent's own are accepted; so is a non-browser (no Origin)
    assert _close_code(agent, path, {**cookie, "Origin": PLATFORM}) is None
    assert _close_code(agent, path, {**cookie, "Origin": agent.url}) is None
    # (behind a TLS-terminating proxy the page is https:// while the socket arrives as ws://)
    https_self = agent.url.replace("http://", "https://")
    assert _close_code(agent, path, {**cookie, "Origin": https_self}) is None
    # another port of the agent's host (a preview) is another origin
    other_port = agent.url.rsplit(":", 1)[0] + ":3001"
    assert _close_code(agent, path, {**cookie, "Origin": other_port}) == 4403
    assert _close_code(agent, path, cookie) is None


def test_a_token_websocket_needs_no_origin_check(agent, user, branch):  # noqa: F811
    # A token is not sent by the browser on its own: whoever holds it may use it from anywhere.
    project_id, branch_id = branch
    path = f"/ws/events/{project_id}/{branch_id}?token={user.token}"
    assert _close_code(agent, path, {"Origin": "https://evil.example"}) is None


def test_cors_preflight_answers_only_the_configured_origins(agent):
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{agent.url}/projects", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}, timeout=30)

    allowed = preflight(PLATFORM)
    assert allowed.headers.get("access-control-allow-origin") == PLATFORM
    assert allowed.headers.get("access-control-allow-credentials") == "true"
    for foreign in (PREVIEW, "https://evil.example", "null"):
        assert "access-control-allow-origin" not in preflight(foreign).headers, foreign


def _settings_of(env: dict[str, str], expression: str) -> runner.Completed:
    """Load the agent's settings in a fresh interpreter with `env`; print `expression`."""
    code = ("import django, os; os.environ['DJANGO_SETTINGS_MODULE']='weldr_agent.settings'; "
            f"from django.conf import settings; print({expression})")
    return runner.run([sys.executable, "-c", code], env=runner.clean_env(env), cwd=REPO,
                      timeout=60, check=False)


PRODUCTION = {"NODE_ENV": "production", "DATABASE_URL": "postgres://u:p@127.0.0.1:1/d",
              "REDIS_URL": "redis://127.0.0.1:1", "S3_ACCESS_KEY_ID": "k",
              "S3_SECRET_ACCESS_KEY": "s", "BETTER_AUTH_SECRET": "x", "PROJECT_ID": "p",
              "ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o", "GEMINI_API_KEY": "g"}


def test_production_has_no_default_cross_origin():
    assert _settings_of(PRODUCTION, "settings.CORS_ALLOWED_ORIGINS").stdout.strip() == "[]"
    named = _settings_of({**PRODUCTION, "CORS_ORIGIN": f"{PLATFORM},http://localhost:5173"},
                         "settings.CORS_ALLOWED_ORIGINS")
    assert named.stdout.strip() == f"['{PLATFORM}', 'http://localhost:5173']"


@pytest.mark.parametrize("value", ["*", "https://platform.example/", "platform.example",
                                   "https://platform.example/app"])
def test_a_value_that_is_not_an_origin_stops_start_up(value: str):
    found = _settings_of({**PRODUCTION, "CORS_ORIGIN": value}, "settings.CORS_ORIGIN")
    assert found.returncode != 0
    assert "ImproperlyConfigured" in found.stderr and "CORS_ORIGIN" in found.stderr
