"""Private previews through the HTTP proxy, with real sandboxed apps: tokens and their scope,
keep-alive, websockets, and a real Chromium following a Vite app's HMR over the token cookie."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from previews import tokens
from tests.browser.chromium import Chromium
from tests.previews.conftest import FIXTURES, make_workspace, wait_status
from tests.previews.test_dev_servers import INDEX_HTML, chown_tree
from weldr_agent import runner

pytestmark = [pytest.mark.django_db(databases="__all__", transaction=True),
              pytest.mark.timeout(300)]

# Answers every request with what it received: the proxy's work is visible in its answer.
ECHO_JS = """
const server = require("http").createServer((req, res) => {
  if (req.url === "/stream") {  // a first piece now, the rest much later: no buffering
    res.write("first piece\\n");
    setTimeout(() => res.end("the rest\\n"), 20000).unref();
    return;
  }
  if (req.method === "POST") {  // the body back, chunked both ways
    res.setHeader("content-type", "text/plain");
    req.pipe(res);
    return;
  }
  res.setHeader("content-type", "application/json");
  res.setHeader("set-cookie", ["app=1; Path=/", "sessionid=planted; Path=/"]);
  res.end(JSON.stringify({url: req.url, headers: req.headers}));
});
server.keepAliveTimeout = 200;  // drops idle connections fast: the proxy must reconnect
server.listen(Number(process.env.PORT), process.env.HOST);
"""


def start_echo(api: APIClient, workspace: Path, **extra: object) -> dict:
    (workspace / "echo.js").write_text(ECHO_JS)
    response = api.post("/previews/start", {"bucket": workspace.name, "command": "node echo.js",
                                            **extra}, format="json")
    assert response.status_code == 201, response.json()
    assert wait_status(workspace.name, {"running"}) == "running"
    return response.json()


def get(port: int, path: str = "/", connection: http.client.HTTPConnection | None = None,
        **headers: str) -> tuple[http.client.HTTPResponse, bytes]:
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = connection.getresponse()
    return response, response.read()


def mint(api: APIClient, bucket: str, **body: object) -> dict:
    response = api.post(f"/previews/{bucket}/tokens", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_token_opens_only_its_own_preview_until_it_expires_or_is_spent(
        api: APIClient, previews: None, workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # given two private previews, in two buckets, on two ports
    other = make_workspace(f"{workspace.name[:50]}-b")
    try:
        mine = start_echo(api, workspace, access="token")
        theirs = start_echo(api, other, access="token")
        port, other_port = mine["port"], theirs["port"]
        assert mine["access"] == "token"
        assert api.get(f"/previews/{workspace.name}").json()["access"] == "token"

        # without a token: the proxy's own 401, nothing reaches the app
        response, body = get(port)
        assert response.status == 401 and b"This preview is private" in body
        assert response.getheader("X-Weldr-Preview-Proxy") == "refused"

        # a link: the token in the URL once, then a cookie for the preview's host
        minted = mint(api, workspace.name, ttl_seconds=600)
        assert minted["port"] == port and minted["one_shot"] is False
        assert minted["url"].endswith(f":{port}/?preview_token={minted['token']}")
        response, _ = get(port, f"/page?x=1&preview_token={minted['token']}&y=2")
        assert response.status == 302 and response.getheader("Location") == "/page?x=1&y=2"
        cookie = response.getheader("Set-Cookie")
        assert cookie.startswith(f"weldr_preview_{port}=")
        assert "; HttpOnly" in cookie and "; SameSite=Lax" in cookie and "Secure" not in cookie
        jar = cookie.split(";")[0]

        # the cookie and the header open it, several requests on one kept-alive connection; the
        # app never sees either, nor the platform's cookies, nor may it set them
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        kept.connect()
        sock = kept.sock
        for _ in range(3):
            response, body = get(port, "/page?x=1&y=2", kept,
                                 Cookie=f"{jar}; theme=dark; sessionid=django")
            assert response.status == 200, body
            echoed = json.loads(body)
            assert echoed["url"] == "/page?x=1&y=2"
            assert echoed["headers"]["cookie"] == "theme=dark"
            assert response.msg.get_all("Set-Cookie") == ["app=1; Path=/"]
        time.sleep(1.5)  # the app drops its idle connection (node: timeout + 1 s)
        assert get(port, "/", kept, Cookie=jar)[0].status == 200
        assert kept.sock is sock  # the same connection all along
        kept.request("POST", "/echo", body=iter([b"chunked ", b"body"]), encode_chunked=True,
                     headers={"Cookie": jar, "Transfer-Encoding": "chunked"})
        echoed_post = kept.getresponse()
        assert echoed_post.read() == b"chunked body"
        assert echoed_post.getheader("Transfer-Encoding") == "chunked"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stream:
            stream.sendall(f"GET /stream HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n\r\n".encode())
            received = b""
            while b"first piece" not in received:
                piece = stream.recv(4096)
                assert piece, received
                received += piece
        response, body = get(port, X_Weldr_Preview_Token=minted["token"])
        assert response.status == 200 and "x-weldr-preview-token" not in json.loads(body)["headers"]
        response, body = get(port, Authorization=f"Bearer {minted['token']}")
        assert response.status == 200 and "authorization" not in json.loads(body)["headers"]

        # out of scope: its token on the other preview's port, the other bucket's token for
        # this port, an expired token, a forged one
        assert get(other_port, X_Weldr_Preview_Token=minted["token"])[0].status == 403
        assert get(other_port, Cookie=jar.replace(str(port), str(other_port)))[0].status == 403
        foreign = mint(api, other.name, port=port)["token"]
        assert get(port, X_Weldr_Preview_Token=foreign)[0].status == 403
        expired, _ = tokens.token_mint(bucket=workspace.name, port=port, ttl_seconds=0,
                                       expires=int(time.time()) - 1)
        response, body = get(port, X_Weldr_Preview_Token=expired)
        assert response.status == 401 and b"expired" in body
        forged = minted["token"][:-2] + ("AA" if not minted["token"].endswith("AA") else "BB")
        assert get(port, X_Weldr_Preview_Token=forged)[0].status == 401

        # a one-shot link opens once; its cookie carries on, the link does not
        once = mint(api, workspace.name, one_shot=True)
        assert once["one_shot"] is True
        response, _ = get(port, f"/?preview_token={once['token']}")
        assert response.status == 302
        assert get(port, Cookie=response.getheader("Set-Cookie").split(";")[0])[0].status == 200
        response, body = get(port, f"/?preview_token={once['token']}")
        assert response.status == 401 and b"already used" in body
        # spent on disk, not in memory: still spent after an agent restart
        spent = tokens.token_decode(once["token"])
        assert (settings.PREVIEW_TOKENS_USED_DIR / f"{spent.expires}-{spent.id}").is_file()

        # on its own host name (PREVIEW_DOMAIN), a port answers that name only
        settings.PREVIEW_DOMAIN = "previews.test"
        own = f"{workspace.name}-{port}.previews.test"
        assert api.get(f"/previews/{workspace.name}").json()["url"] == f"http://{own}:{port}/"
        assert get(port, Host=f"{own}:{port}", Cookie=jar)[0].status == 200
        assert get(port, Host=f"127.0.0.1:{port}", Cookie=jar)[0].status == 404
        assert get(port, Host=f"{other.name}-{other_port}.previews.test", Cookie=jar)[0].status \
            == 404
        settings.PREVIEW_DOMAIN = ""

        # the API's answers to bad input
        assert api.post("/previews/no-such-bucket/tokens", {}, format="json").json()["code"] \
            == "no_preview"
        assert api.post(f"/previews/{workspace.name}/tokens", {"port": 2999},
                        format="json").json()["code"] == "invalid_port"
        too_long = api.post(f"/previews/{workspace.name}/tokens", {"ttl_seconds": 10**8},
                            format="json")
        assert too_long.status_code == 400 and too_long.json()["code"] == "invalid"
    finally:
        shutil.rmtree(other, ignore_errors=True)


VITE_MAIN_JS = """import { greeting } from "./greeting.js";
window.state = { updates: 0, connected: false };
const render = (greet) => {
  document.getElementById("app").textContent = greet("Vite");
};
render(greeting);
if (import.meta.hot) {
  import.meta.hot.accept("./greeting.js", (module) => render(module.greeting));
  import.meta.hot.on("vite:afterUpdate", () => { window.state.updates += 1; });
}
"""


def test_chromium_follows_a_private_vite_apps_hmr_over_the_token_cookie(
        api: APIClient, previews: None, workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # given a private Vite app
    shutil.copytree(FIXTURES / "node_modules", workspace / "node_modules", symlinks=True)
    (workspace / "package.json").write_text(
        '{"name": "vite-app", "private": true, "type": "module",\n'
        ' "scripts": {"dev": "vite --host \\"$HOST\\" --port \\"$PORT\\" --strictPort"}}\n')
    (workspace / "index.html").write_text(INDEX_HTML)
    (workspace / "main.js").write_text(VITE_MAIN_JS)
    (workspace / "greeting.js").write_text("export const greeting = (n) => `Rendered by ${n}`;\n")
    chown_tree(workspace, settings.SANDBOX_UID)
    started = api.post("/previews/start", {"bucket": workspace.name, "access": "token"},
                       format="json")
    assert started.status_code == 201, started.json()
    port = started.json()["port"]
    token = mint(api, workspace.name, one_shot=True)["token"]
    header = mint(api, workspace.name)["token"]
    assert wait_status(workspace.name, {"running"}, timeout=120) == "running"
    response, body = get(port, X_Weldr_Preview_Token=header)
    assert response.status == 200 and b"weldr vite fixture" in body

    # the HMR websocket through the proxy: refused without a token, served with one
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{port}/", subprotocols=["vite-hmr"], open_timeout=30)
    assert refused.value.response.status_code == 401
    with ws_connect(f"ws://127.0.0.1:{port}/", subprotocols=["vite-hmr"], open_timeout=30,
                    additional_headers={"X-Weldr-Preview-Token": header}) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "connected"

    # when a real browser opens the one-shot link
    chromium = Chromium()
    try:
        chromium.call("Page.navigate", url=f"http://127.0.0.1:{port}/?preview_token={token}")
        chromium.wait_for("document.getElementById('app')?.textContent === 'Rendered by Vite'")
        assert chromium.evaluate("location.href") == f"http://127.0.0.1:{port}/"
        chromium.evaluate("window.marker = 'this page'")

        # then an edit reaches the page as an HMR update over the websocket, not a reload (the
        # websocket may still be connecting at the first edit: edit again until one arrives)
        def updated() -> bool:
            updated.version += 1  # type: ignore[attr-defined]
            version = updated.version  # type: ignore[attr-defined]
            (workspace / "greeting.js").write_text(
                f"export const greeting = (n) => `Hot v{version} from ${{n}}`;\n")
            return runner.wait_until(lambda: chromium.evaluate(
                "document.getElementById('app').textContent") == f"Hot v{version} from Vite",
                timeout=5, interval=0.1)

        updated.version = 0  # type: ignore[attr-defined]
        assert runner.wait_until(updated, timeout=90, interval=0), \
            api.get(f"/previews/{workspace.name}/logs").content.decode()
        assert chromium.evaluate("window.marker") == "this page"
        assert chromium.evaluate("window.state.updates") >= 1
    finally:
        chromium.close()
