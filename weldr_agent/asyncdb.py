"""Database work for async views, on a few long-lived threads that keep their connections.

`sync_to_async` (thread-sensitive, the default) runs each request's sync code on a thread made
for that request (Django's ASGI handler opens a ThreadSensitiveContext per request), so every
request opens a new database connection: for a SQLite file that is the connect, the
init_command PRAGMAs and the function registrations — a third of an exec's round trip here. The
threads of this pool live as long as the process, so with CONN_MAX_AGE their connections are
reused (the shared PostgreSQL's pooled connection is given back after each call); each call
first drops a connection that is obsolete or broken (as Django does at the start of a
request), so a restarted PostgreSQL is reconnected to, not failed on.

Use it for short, self-contained units of ORM work (authentication, a lookup, a write): a call
must not expect the thread of an earlier call (open transactions do not span calls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

# Few threads: the work is short and SQLite serialises writers anyway; blocking runtime calls
# (sandbox starts) use asyncio.to_thread and cannot starve this pool.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="weldr-db")


def db_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    @wraps(func)
    def unit(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            # A pooled PostgreSQL connection (CONN_MAX_AGE 0) goes back to the pool now, not
            # when this thread's next call comes; the local SQLite one (no max age) stays.
            close_old_connections()

    return sync_to_async(unit, thread_sensitive=False, executor=_executor)
