"""A preview app is the workspace's code: it must never see who opened it.

Previews are served on the agent's host name (one port each) unless PREVIEW_DOMAIN is set, and
cookies are not scoped by port: a browser sends the platform's session cookie and `/admin/`'s
to every preview it opens. Attack: an app (running in its real sandbox) that echoes its request
and answers with cookies of the platform's names. Before the HTTP proxy it received
`better-auth.session_token` and `sessionid` exactly as the browser sent them.
"""

# ruff: noqa: F811 - the previews tests' fixtures are imported by name and used as arguments
from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from previews import tokens
from tests.previews.conftest import http_get, previews, wait_status, workspace  # noqa: F401

pytestmark = [pytest.mark.django_db(databases="__all__", transaction=True),
              pytest.mark.timeout(180)]

ECHO_JS = """
require("http").createServer((req, res) => {
  res.setHeader("content-type", "application/json");
  res.setHeader("set-cookie", ["better-auth.session_token=planted; Path=/",
                               "sessionid=planted; Path=/", "app=1; Path=/"]);
  res.end(JSON.stringify(req.headers));
}).listen(Number(process.env.PORT), process.env.HOST);
"""
PLATFORM_COOKIES = ("better-auth.session_token=SESSION; __Secure-better-auth.session_token=SECURE; "
                    "better-auth.session_data=CACHE; sessionid=DJANGO; csrftoken=CSRF; "
                    "weldr_preview_3019=ANOTHER_PREVIEWS_TOKEN")


def test_a_preview_app_never_receives_the_agents_or_the_platforms_cookies(
        api: APIClient, previews: None, workspace: Path) -> None:
    # given a running preview whose app echoes its request headers (public: the default here)
    (workspace / "echo.js").write_text(ECHO_JS)
    started = api.post("/previews/start", {"bucket": workspace.name, "command": "node echo.js"},
                       format="json")
    assert started.status_code == 201, started.json()
    port = started.json()["port"]
    http_get(f"http://127.0.0.1:{port}/")
    assert wait_status(workspace.name, {"running"}) == "running"
    a_preview_token, _ = tokens.token_mint(bucket=workspace.name, port=3019, ttl_seconds=60)

    # when a signed-in browser opens it, with the app's own cookie beside the platform's
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/", headers={
        "Cookie": f"{PLATFORM_COOKIES}; theme=dark",
        "X-Weldr-Preview-Token": a_preview_token,
        "Authorization": f"Bearer {a_preview_token}"})
    response = connection.getresponse()
    echoed = json.loads(response.read())

    # then the app gets its own cookie only, and no preview token
    assert echoed.get("cookie") == "theme=dark", echoed
    assert "x-weldr-preview-token" not in echoed and "authorization" not in echoed, echoed
    # and it cannot plant a session cookie on the host it shares with the agent
    assert response.msg.get_all("Set-Cookie") == ["app=1; Path=/"]


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes on a new connection; everything answered until the proxy closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        received = b""
        try:
            while piece := sock.recv(65536):
                received += piece
        except TimeoutError:
            pass
        return received


def test_a_request_cannot_be_smuggled_past_a_private_previews_token_check(
        api: APIClient, previews: None, workspace: Path) -> None:
    # given a private preview and a valid token for it (a visitor holding a link)
    (workspace / "echo.js").write_text(ECHO_JS)
    started = api.post("/previews/start", {"bucket": workspace.name, "command": "node echo.js",
                                           "access": "token"}, format="json")
    assert started.status_code == 201, started.json()
    port = started.json()["port"]
    assert wait_status(workspace.name, {"running"}) == "running"
    token = api.post(f"/previews/{workspace.name}/tokens", {}, format="json").json()["token"]
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

    # when a second request hides in a body framed two ways, or behind a bare LF
    ambiguous = (b"POST / HTTP/1.1\r\nHost: x\r\nX-Weldr-Preview-Token: " + token.encode()
                 + b"\r\nContent-Length: " + str(5 + len(smuggled)).encode()
                 + b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    bare_lf = (b"POST / HTTP/1.1\r\nHost: x\r\nX-Weldr-Preview-Token: " + token.encode()
               + b"\r\nX-Note: a\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
               + b"0\r\n\r\n" + smuggled)

    # then the proxy refuses the message and closes: nothing reaches the app unchecked
    for raw in (ambiguous, bare_lf):
        answer = _exchange(port, raw)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
        assert b"/smuggled" not in answer and answer.count(b"HTTP/1.1 ") == 1, answer
