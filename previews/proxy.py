"""The host side of a preview: an HTTP proxy from the leased host port to the app's netns.

Apps listen inside their own network namespace; the agent listens on the leased port on every
host address (PREVIEW_BIND_ADDRESS) and forwards each connection to `<sandbox ip>:<port>`. Chosen
over DNAT because it needs no machine-wide sysctl (ip_forward, route_localnet for 127.0.0.1)
and no per-port NAT rules, and it dies with the agent (docs/previews.md has the figures).

One asyncio loop in a daemon thread serves every port, independent of the server's own loop.
What is said on a connection (HTTP/1.1, access tokens, cookies, websockets) is
previews/http_proxy.py's; this module holds the listeners, the limits and the held connect.

Connections are unauthenticated and cheap to open, so each port serves at most
PREVIEW_MAX_CONNECTIONS_PER_PORT at once and each client address at most
PREVIEW_MAX_CONNECTIONS_PER_CLIENT across all ports (held ones included); one more is answered
429 and closed at once, before anything reaches the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

from django.conf import settings

from previews.http_proxy import PUBLIC, Route, Streams, Target, serve

logger = logging.getLogger("weldr.proxy")

HOLD_POLL_SECONDS = 0.002
# How often a connection held for an app that does not listen yet checks its client and deadline.
HOLD_CHECK_SECONDS = 0.05


class PortBusy(OSError):
    """Something else on the host already listens on the port."""


# What a target answers while the app's sandbox is still being made: hold the client.
NOT_YET = ("", 0)


async def _connect(target: Target, abandoned: Callable[[], bool],
                   listening: asyncio.Event | None = None) -> Streams | None:
    """The app's end of a connection; held while the app does not listen yet.

    A client that connects while the app starts waits (up to PREVIEW_HOLD_SECONDS) and is served
    the moment the app listens, instead of being cut and retrying: no client polling loop
    competes with the app's start-up for the CPU, and a browser sees a slow page, not an error.
    While the target says NOT_YET the connection tries nothing: it waits for `listening`, set by
    `Proxy.wake()` when the preview's watcher saw the app listen (twenty held connections each
    trying a connect every 2 ms were a third of the agent's CPU in a burst of twenty starts).
    A client that goes away meanwhile is let go within HOLD_CHECK_SECONDS: it must not keep its
    place until the deadline.
    """
    deadline = asyncio.get_running_loop().time() + settings.PREVIEW_HOLD_SECONDS
    attempt = 0
    while True:
        address = target()
        if address is None:
            # The app is gone (stopped, exited).
            return None
        if address != NOT_YET:
            try:
                return await asyncio.open_connection(*address)
            except OSError:
                pass
        if asyncio.get_running_loop().time() > deadline or abandoned():
            return None
        if address == NOT_YET and listening is not None and not listening.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listening.wait(), HOLD_CHECK_SECONDS)
            continue
        attempt += 1
        # An address that refuses (an app restarting, or a target without a watcher): often
        # at first, then gentler, so that refused connects do not eat the apps' CPU.
        await asyncio.sleep(HOLD_POLL_SECONDS * (1 if attempt < 100 else 5 if attempt < 500
                                                 else 25))


def _refusal(setting: str) -> bytes:
    """What a refused client reads: previews are HTTP apps, so an HTTP answer naming the limit
    (sent before the request is read; clients take it as the answer to their request)."""
    body = f"Too many connections to this preview ({setting}); retry later.\n".encode()
    return (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Connections:
    """Open connections by port and by client address. Only the proxy's loop touches it, and
    `admit` counts and takes in one step (no await between): no check-then-act."""

    def __init__(self) -> None:
        self.by_port: Counter[int] = Counter()
        self.by_client: Counter[str] = Counter()

    def admit(self, port: int, client: str) -> str | None:
        """Take a place for a new connection, or name the setting that refuses it."""
        if self.by_port[port] >= settings.PREVIEW_MAX_CONNECTIONS_PER_PORT:
            return "PREVIEW_MAX_CONNECTIONS_PER_PORT"
        if self.by_client[client] >= settings.PREVIEW_MAX_CONNECTIONS_PER_CLIENT:
            return "PREVIEW_MAX_CONNECTIONS_PER_CLIENT"
        self.by_port[port] += 1
        self.by_client[client] += 1
        return None

    def leave(self, port: int, client: str) -> None:
        for counter, key in ((self.by_port, port), (self.by_client, client)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _serve(connections: Connections, route: Route, listening: asyncio.Event,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    client = peer[0] if peer else ""
    refused = connections.admit(route.port, client)
    if refused is not None:
        logger.warning("preview port %s: connection from %s refused (%s)", route.port, client,
                       refused)
        writer.write(_refusal(refused))
        writer.close()
        return

    async def connect() -> Streams | None:
        upstream = await _connect(route.target,
                                  lambda: reader.at_eof() or writer.is_closing(), listening)
        if upstream is not None:
            _nodelay(upstream[1])
        return upstream

    _nodelay(writer)
    try:
        await serve(route, (reader, writer), connect)
    finally:
        connections.leave(route.port, client)


class Proxy:
    """Listeners by host port; `open()` and `close()` are thread-safe and synchronous."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: dict[int, asyncio.base_events.Server] = {}
        # Per port: set once its app listens (`wake`); held connections wait on it.
        self._listening: dict[int, asyncio.Event] = {}
        self.connections = Connections()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="preview-proxy",
                                 daemon=True).start()
                self._loop = loop
            return self._loop

    def _call(self, coroutine) -> object:  # type: ignore[no-untyped-def]
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self._ensure_loop())
        return future.result(timeout=30)

    def open(self, port: int, *, target: Target, bucket: str = "",
             access: str = PUBLIC) -> None:
        """Listen on `port`, forwarding to `target()` what `access` lets through (the bucket
        names the preview a token must be for); raise PortBusy when the port is taken."""
        route = Route(port=port, target=target, bucket=bucket, access=access)

        async def start() -> None:
            listening = asyncio.Event()
            server = await asyncio.start_server(
                lambda r, w: _serve(self.connections, route, listening, r, w),
                host=settings.PREVIEW_BIND_ADDRESS, port=port, reuse_address=True,
            )
            self._servers[port] = server
            self._listening[port] = listening

        try:
            self._call(start())
        except OSError as error:
            raise PortBusy(error.errno, f"port {port} is in use on this host") from error

    def close(self, port: int) -> None:
        """Stop listening on `port` (idempotent); open connections are cut."""
        async def stop() -> None:
            self._listening.pop(port, None)
            server = self._servers.pop(port, None)
            if server is not None:
                server.close()
                if hasattr(server, "close_clients"):
                    server.close_clients()

        if self._loop is not None:
            self._call(stop())

    def wake(self, port: int) -> None:
        """The app behind `port` listens: let its held connections connect now (thread-safe)."""
        def wake() -> None:
            listening = self._listening.get(port)
            if listening is not None:
                listening.set()

        if self._loop is not None:
            self._loop.call_soon_threadsafe(wake)

    def ports(self) -> list[int]:
        return sorted(self._servers)


proxy = Proxy()
