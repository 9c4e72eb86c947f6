"""Fixtures for the browser tests: one agent per module behind a cuttable proxy, a page server
on another loopback origin (allowed by CORS_ORIGIN), a signed-in user's session cookie, and
headless Chromium."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.chromium import Chromium, CuttableProxy
from tests.conftest import AgentProcess
from tests.servers import free_port, fresh_database
from tests.workflows.conftest import agent_env

PAGE = Path(__file__).resolve().parent / "follow.html"
COOKIE_NAME = "better-auth.session_token"

SIGN_IN = """
import datetime, secrets
from urllib.parse import quote
from django.conf import settings
from django.utils import timezone
from weldr_agent.auth import sign_session_token
from weldr_agent.betterauth.models import Session, User
now = timezone.now()
user = User.objects.create(id=secrets.token_hex(8), name="Browser", created_at=now,
                           updated_at=now, email=secrets.token_hex(6) + "@example.com")
token = secrets.token_hex(16)
Session.objects.create(id=secrets.token_hex(8), user_id=user.id, token=token, created_at=now,
                       updated_at=now, expires_at=now + datetime.timedelta(hours=1))
print(quote(sign_session_token(token, settings.BETTER_AUTH_SECRET)))
"""


class PageServer:
    """Serves follow.html at / from its own origin (http://127.0.0.1:<port>)."""

    def __init__(self) -> None:
        body = PAGE.read_bytes()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Site:
    """The agent (behind `proxy`), the page's origin, and an HTTP client signed in by cookie."""

    def __init__(self, agent: AgentProcess, proxy: CuttableProxy, page: PageServer,
                 cookie: str) -> None:
        self.agent, self.proxy, self.page, self.cookie = agent, proxy, page, cookie
        self.http = httpx.Client(base_url=agent.url, timeout=120,
                                 cookies={COOKIE_NAME: cookie})


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database("br") as url:
        yield url


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    scripts, workspaces = root / "scripts", root / "workspaces"
    for directory in (scripts, workspaces):
        directory.mkdir()
        directory.chmod(0o755)
    page = PageServer()
    env = agent_env(dict(os.environ), tmp=root, database=database, scripts=scripts,
                    workspaces=workspaces)
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "CORS_ORIGIN": page.origin,
                "WELDR_INSTANCE_ID": secrets.token_hex(3)})
    agent = AgentProcess(env, free_port(), root / "agent.log")
    agent.start(timeout=120)
    proxy = CuttableProxy(agent.port)
    try:
        cookie = agent.manage("shell", "-c", SIGN_IN).stdout.strip().splitlines()[-1]
        site = Site(agent, proxy, page, cookie)
        site.scripts = scripts  # type: ignore[attr-defined]
        yield site
        site.http.close()
    finally:
        proxy.close()
        agent.stop()
        agent.remove_leftovers()
        page.close()


@pytest.fixture
def browser(site: Site) -> Iterator[Chromium]:
    """Chromium on the test page, holding the session cookie for the agent's host."""
    chromium = Chromium()
    try:
        chromium.set_cookie(name=COOKIE_NAME, value=site.cookie, url=site.proxy.url)
        chromium.open(f"{site.page.origin}/")
        yield chromium
    finally:
        chromium.close()
