"""Start-up and shutdown hooks that apps register in their AppConfig.ready().

`serve` runs every start-up hook before accepting traffic (reconcile the machine with the state
database, start workers) and every shutdown hook when it stops, highest order first, within
SHUTDOWN_TIMEOUT_SECONDS. From the first SIGTERM/SIGINT on, `shutting_down()` is true and the
middleware answers new requests 503 `shutting_down`. The ordering contract: docs/shutdown.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("weldr.lifecycle")


@dataclass(frozen=True)
class Hook:
    name: str
    order: int
    startup: Callable[[], None] | None
    shutdown: Callable[[float], None] | None  # receives the deadline (time.monotonic())


_hooks: dict[str, Hook] = {}
_stopping = threading.Event()


def register(name: str, *, order: int, startup: Callable[[], None] | None = None,
             shutdown: Callable[[float], None] | None = None) -> None:
    """Register hooks; lower `order` starts first and shuts down last."""
    _hooks[name] = Hook(name, order, startup, shutdown)


def hooks() -> list[Hook]:
    # Ties break by name so that the order never depends on which app was imported first.
    return sorted(_hooks.values(), key=lambda hook: (hook.order, hook.name))


def shutting_down() -> bool:
    """True from the moment shutdown began: take no new work."""
    return _stopping.is_set()


def begin_shutdown() -> None:
    _stopping.set()


def startup() -> None:
    _stopping.clear()
    for hook in hooks():
        if hook.startup is not None:
            logger.info("start-up: %s", hook.name)
            hook.startup()


def _run_hook(hook: Hook, deadline: float) -> bool:
    """Run one shutdown hook in a thread; give up waiting for it at the deadline."""
    assert hook.shutdown is not None
    failed: list[BaseException] = []

    def target() -> None:
        from django.db import close_old_connections

        try:
            hook.shutdown(deadline)  # type: ignore[misc]
        except BaseException as error:  # reported below, the other hooks still run
            failed.append(error)
            logger.exception("shutdown hook %s failed", hook.name)
        finally:
            close_old_connections()

    thread = threading.Thread(target=target, name=f"shutdown-{hook.name}", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(max(deadline - time.monotonic(), 0))
    if thread.is_alive():
        logger.error("shutdown hook %s did not finish before the deadline", hook.name)
        return False
    logger.info("shutdown: %s done in %.1fs", hook.name, time.monotonic() - started)
    return not failed


def shutdown(timeout: float) -> bool:
    """Run the shutdown hooks, highest order first; True when all finished cleanly in time."""
    begin_shutdown()
    deadline = time.monotonic() + timeout
    clean = True
    for hook in reversed(hooks()):
        if hook.shutdown is None:
            continue
        if time.monotonic() >= deadline:
            logger.error("shutdown deadline passed; skipping %s", hook.name)
            clean = False
            continue
        logger.info("shutdown: %s", hook.name)
        clean = _run_hook(hook, deadline) and clean
    return clean


def close_channel_layer(loop: asyncio.AbstractEventLoop, timeout: float = 5) -> None:
    """Close the Redis channel layer's connections on `loop`, the server's event loop that
    opened them (they cannot be closed from another loop)."""
    from channels.layers import get_channel_layer

    close = getattr(get_channel_layer(), "close_pools", None)
    if close is None or loop.is_closed() or not loop.is_running():
        return
    try:
        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)
    except Exception as error:  # the process exits next: the sockets close with it
        logger.warning("closing the Redis channel layer: %s", error)


def close_connections() -> None:
    """Close every database connection of this thread (the last step of a shutdown)."""
    from django.db import connections

    connections.close_all()
    # The shared PostgreSQL's pool: its idle connections end with a goodbye, not a dropped socket.
    for connection in connections.all(initialized_only=True):
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()
