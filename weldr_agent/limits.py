"""Open event streams per principal (SSE and websockets), counted in this process.

Each stream takes a slot before it starts and gives it back when it ends, however it ends
(finished, client gone, response closed, or dropped). One more than STREAMS_PER_PRINCIPAL is a
429 `too_many_streams` (SSE) or a 4429 close (websocket): a client that forgets its streams, or
a script opening thousands, cannot hold the server's event loop, Redis channels and file
pollers without bound. Counting and taking happen under one lock: no check-then-act.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings
from rest_framework import exceptions

CLOSE_TOO_MANY_STREAMS = 4429

# Re-entrant: a slot's __del__ may run (garbage collection) while this thread holds the lock.
_lock = threading.RLock()
_open: Counter[str] = Counter()


class TooManyStreams(exceptions.APIException):
    status_code = 429
    default_code = "too_many_streams"
    default_detail = "Too many open event streams for this principal."


def principal_key(principal: Any) -> str:
    """Who a stream is counted against: the user for platform credentials, else the token."""
    user_id = getattr(principal, "user_id", None)
    if user_id:
        return f"user:{user_id}"
    return f"{getattr(principal, 'kind', 'anonymous')}:{getattr(principal, 'name', '')}"


def open_streams(principal: Any) -> int:
    with _lock:
        return _open[principal_key(principal)]


class StreamSlot:
    """One open stream of a principal; `release()` is idempotent."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._held = True

    def release(self) -> None:
        with _lock:
            if not self._held:
                return
            self._held = False
            _open[self.key] -= 1
            if _open[self.key] <= 0:
                del _open[self.key]

    def wrap(self, stream: AsyncIterator[Any]) -> CountedStream:
        return CountedStream(stream, self)

    def __del__(self) -> None:
        # The last resort: a response dropped before it was ever iterated.
        self.release()


def stream_slot_take(*, principal: Any) -> StreamSlot:
    """Take a slot for a new stream of `principal`, or raise TooManyStreams."""
    key = principal_key(principal)
    limit = settings.STREAMS_PER_PRINCIPAL
    with _lock:
        if _open[key] >= limit:
            raise TooManyStreams(
                f"{limit} event streams are already open for this principal "
                "(STREAMS_PER_PRINCIPAL); close one first.")
        _open[key] += 1
    return StreamSlot(key)


class CountedStream:
    """An async iterator that holds a slot while it runs.

    Django calls `close()` on a streaming response's content when the response is done; a client
    that hangs up cancels the iteration instead, and the `finally` gives the slot back.
    """

    def __init__(self, stream: AsyncIterator[Any], slot: StreamSlot) -> None:
        self.stream, self.slot = stream, slot

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self.stream:
                yield item
        finally:
            self.slot.release()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    def close(self) -> None:
        self.slot.release()


def counted(*, principal: Any, stream: AsyncIterator[Any]) -> CountedStream:
    """`stream`, counted against `principal` (raises TooManyStreams when over the limit)."""
    return stream_slot_take(principal=principal).wrap(stream)
