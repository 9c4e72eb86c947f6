"""Cross-site websocket hijacking: another site's page must not ride on the user's cookie.

A browser attaches the agent's session cookie to every websocket handshake to the agent,
whichever page opened it, and CORS does not guard a websocket. The handshake's Origin decides
whether the cookie counts: the agent's own origin or one of CORS_ORIGIN, never another site.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from websockets.sync.client import connect as ws_connect

from tests.browser.conftest import COOKIE_NAME, SIGN_IN
from tests.workflows.conftest import (  # noqa: F401 (fixtures)
    Agent,
    agent_factory,
    scripts,
    shared_database,
    workspaces,
)

pytestmark = pytest.mark.timeout(300)

ALLOWED = "https://app.example.test"


def first_message(url: str, origin: str, cookie: str) -> tuple[int | None, dict | None]:
    """(close code, None) when the agent refuses the socket, else (None, the first event)."""
    with ws_connect(url, origin=origin,  # type: ignore[arg-type]
                    additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"},
                    open_timeout=30) as socket:
        try:
            return None, json.loads(socket.recv(timeout=30))
        except Exception:
            return socket.close_code, None


def test_a_session_cookie_opens_the_event_socket_only_from_a_trusted_origin(
        agent_factory: Callable[..., Agent]) -> None:  # noqa: F811
    # given: a signed-in user's branch with one event
    agent = agent_factory(CORS_ORIGIN=ALLOWED)
    cookie = agent.process.manage("shell", "-c", SIGN_IN).stdout.strip().splitlines()[-1]
    assert agent.http is not None
    agent.http.headers.pop("Authorization")
    agent.http.cookies.set(COOKIE_NAME, cookie)
    project = agent.http.post("/projects", json={"name": "mine"}).json()
    branch = agent.http.post(f"/projects/{project['id']}/branches",
                             json={"name": "main", "bucket": "ws-origin"}).json()
    url = f"ws://127.0.0.1:{agent.process.port}/ws/events/{project['id']}/{branch['id']}" \
          "?last_event_id=0"
    write = agent.http.post("/trigger", json={
        "project_id": project["id"], "branch_id": branch["id"], "model": "scripted/none",
        "message": {"content": [{"type": "text", "text": "hi"}]}})
    assert write.status_code == 202, write.text

    # when: another site's page opens the socket, then the agent's own page and a CORS one
    hijack = first_message(url, "https://evil.example", cookie)
    own = first_message(url, agent.url, cookie)
    cors = first_message(url, ALLOWED, cookie)

    # then: the cookie is ignored for the other site (unauthenticated), honoured for the others
    assert hijack == (4401, None)
    assert own[1] is not None and own[1]["type"] == "run.queued"
    assert cors == own
