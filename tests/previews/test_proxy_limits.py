"""The preview proxy's connection limits, with real sockets through the real proxy.

Unauthenticated connections are held while an app starts (previews/proxy.py), so without a limit
anyone could hold thousands of them for PREVIEW_HOLD_SECONDS each.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from previews.proxy import NOT_YET, Proxy
from tests.servers import free_port
from weldr_agent import runner

pytestmark = pytest.mark.timeout(120)


class _Pong(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"pong")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[tuple[str, int]]:
    """A real HTTP app listening on loopback: it answers `pong`, keeping the connection."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pong)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(settings) -> Iterator[Proxy]:
    settings.PREVIEW_BIND_ADDRESS = "127.0.0.1"
    settings.PREVIEW_HOLD_SECONDS = 60
    proxy = Proxy()
    yield proxy
    for port in proxy.ports():
        proxy.close(port)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                    source_address=(source, 0))
    return sock


def _ping(sock: socket.socket) -> bytes:
    """One HTTP request on the connection (kept open); the answer's bytes."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: preview\r\n\r\n")
    answer = b""
    while not answer.endswith(b"pong"):
        answer += sock.recv(4096)
    return answer


def _refused(sock: socket.socket) -> str:
    """What the proxy answered at once: its 429, or '' while the connection is held."""
    sock.settimeout(0.5)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        return ""


def _held_count(proxy: Proxy, port: int, count: int) -> None:
    assert runner.wait_until(lambda: proxy.connections.by_port[port] == count, timeout=5), \
        dict(proxy.connections.by_port)


def test_a_port_serves_at_most_its_limit_of_connections(settings, proxy: Proxy) -> None:
    # given a preview whose app is still starting (connections are held) and a limit of 3
    settings.PREVIEW_MAX_CONNECTIONS_PER_PORT = 3
    port = free_port()
    proxy.open(port, target=lambda: NOT_YET)
    held = [_connect(port) for _ in range(3)]
    _held_count(proxy, port, 3)

    # when a fourth client connects, from another address too
    extra = _connect(port, source="127.0.0.2")

    # then it is answered 429 naming the setting, and the held ones are still held
    answer = _refused(extra)
    assert answer.startswith("HTTP/1.1 429 ") and "PREVIEW_MAX_CONNECTIONS_PER_PORT" in answer
    assert all(_refused(sock) == "" for sock in held)

    # and once a client goes, its place is free again
    held.pop().close()
    _held_count(proxy, port, 2)
    again = _connect(port)
    assert _refused(again) == ""
    for sock in [*held, extra, again]:
        sock.close()


def test_a_client_address_holds_at_most_its_limit_across_ports(settings, proxy: Proxy,
                                                              app: tuple[str, int]) -> None:
    # given two previews whose apps listen, and a limit of 2 connections per client address
    settings.PREVIEW_MAX_CONNECTIONS_PER_CLIENT = 2
    first, second = free_port(), free_port()
    proxy.open(first, target=lambda: app)
    proxy.open(second, target=lambda: app)
    mine = [_connect(first), _connect(second)]
    for sock in mine:
        assert _ping(sock).endswith(b"pong")

    # when the same address opens a third connection
    third = _connect(first)

    # then it is refused, while another client address is served
    answer = _refused(third)
    assert answer.startswith("HTTP/1.1 429 ") and "PREVIEW_MAX_CONNECTIONS_PER_CLIENT" in answer
    other = _connect(first, source="127.0.0.2")
    assert _ping(other).endswith(b"pong")
    for sock in [*mine, third, other]:
        sock.close()


def test_a_held_connection_waits_for_the_wake_without_trying_the_app(
        proxy: Proxy, app: tuple[str, int]) -> None:
    # given a preview whose app does not listen yet, and a client already connected
    port, listening, asked = free_port(), threading.Event(), []

    def target() -> tuple[str, int]:
        asked.append(1)
        return app if listening.is_set() else NOT_YET

    proxy.open(port, target=target)
    client = _connect(port)
    client.sendall(b"GET / HTTP/1.1\r\nHost: preview\r\n\r\n")
    assert _refused(client) == ""  # held: nothing answered for half a second

    # then meanwhile the proxy asked for the app's address a few times (its client and
    # deadline checks), not every 2 ms: twenty held connections polling the apps' addresses
    # were a third of the agent's CPU while twenty apps started
    assert len(asked) <= 20, len(asked)

    # when the watcher sees the app listen and wakes the port
    listening.set()
    proxy.wake(port)

    # then the held request goes through at once
    client.settimeout(2)
    answer = b""
    while not answer.endswith(b"pong"):
        answer += client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200")
    client.close()
