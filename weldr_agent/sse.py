"""What every server-sent-events endpoint shares: negotiation, headers, the stream's framing.

A browser's `EventSource` sends `Accept: text/event-stream`; a view that offers only JSON answers
it with 406. An SSE view lists `EventStreamRenderer` beside JSON so that the event stream, `*/*`
and an absent Accept header are all accepted, and its errors still come out as JSON.

`sse_response` gives every stream what the SSE specification and proxies expect: UTF-8 declared
in the content type, no caching or buffering, a `retry:` field first (how long a client waits
before it reconnects), comment keep-alives while the source is quiet, and a clean end at agent
shutdown (`streams_close`): the body ends with its last chunk, so a browser reconnects after
`retry` with `Last-Event-ID` instead of seeing a broken connection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import StreamingHttpResponse
from rest_framework import status
from rest_framework.renderers import BaseRenderer, JSONRenderer

from weldr_agent.errors import APIError

logger = logging.getLogger("weldr.sse")

CONTENT_TYPE = "text/event-stream; charset=utf-8"
# No caching, no transformation (a compressing proxy buffers), and no buffering by a proxy
# (nginx and Fly's honour X-Accel-Buffering).
SSE_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
# How long a browser waits before reconnecting (the spec's default is left to the browser).
RETRY_MILLISECONDS = 1000
KEEPALIVE = b": keep-alive\n\n"


class EventStreamRenderer(BaseRenderer):
    """Accepts `text/event-stream`; what it renders is an error body, as JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict | None = None) -> bytes:
        return JSONRenderer().render(data)


class EventStreamNegotiation:
    """Mixin for an APIView that streams events: JSON or an event stream is acceptable, and an
    error is always JSON (with its own content type), whatever the client asked for."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def handle_exception(self, exc: Exception) -> Any:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)  # type: ignore[misc]


class InvalidEventId(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_event_id"
    default_detail = "Last-Event-ID must be a non-negative integer."


def last_event_id(request: Any, *, query: str | None = None, strict: bool = True) -> int | None:
    """The id of the last event the client has: its `Last-Event-ID` header (what a browser's
    EventSource sends when it reconnects), else the query parameter `query` (a client that
    cannot set headers); None when it starts fresh.

    A value that is not a non-negative integer (ASCII digits: `int()` refuses a `²` that
    `isdigit()` accepts) is a 400 `invalid_event_id`, or, not `strict`, taken as absent.
    """
    value = request.headers.get("Last-Event-ID") or (
        request.query_params.get(query) if query else None)
    if value in (None, ""):
        return None
    if not (value.isascii() and value.isdigit()):
        if strict:
            raise InvalidEventId()
        return None
    return int(value)


def sse_response(stream: AsyncIterator[bytes | str], *,
                 keepalive: float | None = None) -> StreamingHttpResponse:
    """A streaming response of `stream` (an async iterator of SSE frames) with the SSE headers,
    `retry:`, keep-alives every `keepalive` seconds of quiet, and an end at shutdown."""
    seconds = settings.SSE_KEEPALIVE_SECONDS if keepalive is None else keepalive
    connections_release()
    response = StreamingHttpResponse(guarded(stream, keepalive=seconds),
                                     content_type=CONTENT_TYPE)
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response


def connections_release() -> None:
    """Close this thread's database connections (outside a transaction).

    A view runs on a thread of its own request (Django's ASGI handler), and its stream outlives
    it by minutes or hours: the connections that thread opened (authentication, the lookups)
    stayed open as long as the stream, one per subscriber, and were never used again. A
    stream's own reads go through the shared pool (weldr_agent.asyncdb).
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


# ---------------------------------------------------------------------------------------------
# Open streams, and closing them at shutdown
# ---------------------------------------------------------------------------------------------

# Every open stream (SSE response or event websocket): its loop and how to end it.
_open: dict[object, tuple[asyncio.AbstractEventLoop, Callable[[], Any]]] = {}
_open_lock = threading.Lock()


def stream_opened(key: object, close: Callable[[], Any]) -> None:
    """Register an open stream; `close` is called on its event loop at shutdown."""
    with _open_lock:
        _open[key] = (asyncio.get_running_loop(), close)


def stream_closed(key: object) -> None:
    with _open_lock:
        _open.pop(key, None)


def streams_open() -> int:
    with _open_lock:
        return len(_open)


def streams_close(timeout: float = 2.0) -> int:
    """End every open stream (called from the shutdown thread, before the server stops) and
    wait up to `timeout` for them to finish; returns how many were still open."""
    with _open_lock:
        streams = list(_open.values())
    for loop, close in streams:
        if not loop.is_closed():
            loop.call_soon_threadsafe(close)
    deadline = time.monotonic() + timeout
    while streams_open() and time.monotonic() < deadline:
        time.sleep(0.02)
    # The last chunk of each body is written after its generator returned.
    time.sleep(0.1)
    left = streams_open()
    logger.info("streams closed at shutdown: %d (%d still open)", len(streams), left)
    return left


async def guarded(stream: AsyncIterator[bytes | str], *,
                  keepalive: float) -> AsyncIterator[bytes]:
    """`retry:` first, then `stream`'s frames as bytes, a comment whenever it is quiet for
    `keepalive` seconds, until it ends, the client goes, or the agent shuts down."""
    closing = asyncio.Event()
    key = object()
    stream_opened(key, closing.set)
    iterator = aiter(stream)
    pending: asyncio.Future[Any] | None = None
    closer = asyncio.ensure_future(closing.wait())
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending, closer}, timeout=keepalive,
                                         return_when=asyncio.FIRST_COMPLETED)
            if closing.is_set():
                return
            if pending not in done:
                yield KEEPALIVE
                continue
            try:
                frame = pending.result()
            except StopAsyncIteration:
                pending = None
                return
            pending = None
            yield frame.encode() if isinstance(frame, str) else frame
    finally:
        stream_closed(key)
        closer.cancel()
        await _stop(iterator, pending)


async def _stop(iterator: Any, pending: asyncio.Future[Any] | None) -> None:
    """Cancel a pending read and close the source (its `finally` leaves groups, stops polls)."""
    if pending is not None:
        pending.cancel()
        try:
            await pending
        except (asyncio.CancelledError, StopAsyncIteration):
            pass
        except Exception:  # the source failed while being cancelled: it is over anyway
            logger.exception("event stream source failed")
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
