"""Django's ASGI handler, with long-lived request threads, used only by requests that need one.

Django gives every HTTP request a `ThreadSensitiveContext` of its own, and asgiref makes a new
thread for each (started by the request's first sync step, the `request_started` signal, and
joined by yet another new thread when the request ends); the `request_started` and
`request_finished` receivers run there, one trip to the thread and back each. Together ~0.8 ms
of every request here, an eighth of an exec round trip (docs/exec.md, "Measured"). Here:

- each request borrows a thread from a few kept for the purpose (asgiref's
  `ThreadSensitiveContext(executor=...)`: the caller owns the executor), as a WSGI server's
  worker threads serve one request after another;
- the request signals' receivers run in that thread just before the request's first sync step
  and after its response, as in Django — and not at all when the request has no sync step (an
  async view: POST /exec): what they look after is the thread's own state (its database
  connections, query log, URLconf, cache connections), which such a request never touches.

What a request's sync code sees is unchanged: one thread for the whole request, used by nothing
else meanwhile, with `request_started` sent there before any of it runs and `request_finished`
after the response. What a thread keeps from one request to the next is what those receivers
manage, as under any threaded WSGI server: its connections are closed (or given back to the
pool) when obsolete or broken, at the start and end of each request that uses the thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import HttpResponse
from django.urls import set_script_prefix

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


class RequestThread(Executor):
    """One request's use of its borrowed thread: `started` (the request_started receivers)
    runs there right before the request's first sync step; `used` tells whether there was one."""

    def __init__(self, thread: ThreadPoolExecutor, started: Callable[[], Any]) -> None:
        self.thread, self.started, self.used = thread, started, False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.used:
            return self.thread.submit(fn, *args, **kwargs)
        self.used = True
        return self.thread.submit(self._first, fn, args, kwargs)

    def _first(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        self.started()
        return fn(*args, **kwargs)


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGIHandler; each request's sync work runs on a borrowed long-lived thread."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads(IDLE_THREADS)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.threads.take()
        thread = RequestThread(executor, lambda: signals.request_started.send(
            sender=self.__class__, scope=scope))
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send, thread=thread)
        except BaseException:
            # Cut short (cancelled, failed): the thread is not known to be idle; not reused.
            self.threads.discard(executor)
            raise
        self.threads.give(executor)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any,  # type: ignore[override]
                     *, thread: RequestThread) -> None:
        """Django 5.2's `ASGIHandler.handle`, but `request_started` is sent by `thread` (see
        the module) and the response closed by `_close`."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request: Any, send: Any) -> HttpResponse:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while the response was sent
            return response

        # Listen for a disconnect while the response is made (Django's order of checks).
        tasks = [asyncio.create_task(self.listen_for_disconnect(receive)),
                 asyncio.create_task(process_request(request, send))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            if thread.used:
                await signals.request_finished.asend(sender=self.__class__)
        else:
            await self._close(request, response, thread)
        body_file.close()

    @staticmethod
    async def _close(request: Any, response: HttpResponse, thread: RequestThread) -> None:
        """`response.close()` in the request's thread, as Django does; without a trip there
        when the request never used its thread and the response holds nothing to close but
        the request (Django adds `request.close` to every response), which holds no upload."""
        nothing_to_close = not getattr(request, "_files", None) and all(
            getattr(closer, "__self__", None) is request for closer in response._resource_closers)
        if thread.used or not nothing_to_close:
            await sync_to_async(response.close)()
        else:
            response._resource_closers.clear()
            response.closed = True
