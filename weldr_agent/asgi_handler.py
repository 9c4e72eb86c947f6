"""Django's ASGI handler, with long-lived request threads instead of a new thread per request.

Django gives every HTTP request a `ThreadSensitiveContext` of its own, and asgiref makes a new
thread for each (started at the request's first sync step — the `request_started` signal — and
joined, by yet another new thread, when the request ends): ~0.5 ms of every request here, a
fifteenth of an exec round trip (docs/exec.md, "Measured"). Here each request borrows a thread
from a small set kept for the purpose (asgiref's `ThreadSensitiveContext(executor=...)`: the
caller owns the executor), as WSGI servers' worker threads serve one request after another.

What a request's sync code sees is unchanged: one thread for the whole request, used by nothing
else meanwhile. What a thread keeps from one request to the next is what Django's
`request_started`/`request_finished` receivers manage, as under any threaded WSGI server: its
database connections (closed or given back to the pool when obsolete or broken, at the start and
end of each request), its query log and URLconf (reset).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

# Idle threads kept for the next requests; more requests at once get threads of their own,
# shut down when they end. A few: requests here are short, and each thread may hold a
# connection to the local state database.
IDLE_THREADS = 4


class RequestThreads:
    """Single-thread executors, one per request in flight; used from the event loop only."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._idle: list[ThreadPoolExecutor] = []

    def take(self) -> ThreadPoolExecutor:
        if self._idle:
            return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="weldr-request")

    def give(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(executor)
        else:
            executor.shutdown(wait=False)

    def discard(self, executor: ThreadPoolExecutor) -> None:
        # Its thread may still be busy (a request cut short): it ends when its work does.
        executor.shutdown(wait=False)


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGIHandler; each request's sync work runs on a borrowed long-lived thread."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads(IDLE_THREADS)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        except BaseException:
            # Cut short (cancelled, failed): the thread is not known to be idle; not reused.
            self.threads.discard(executor)
            raise
        self.threads.give(executor)
