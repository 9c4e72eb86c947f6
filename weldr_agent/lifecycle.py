"""Start-up and shutdown hooks that apps register in their AppConfig.ready().

`serve` runs every start-up hook before accepting traffic (reconcile the machine with the state
database, start workers) and every shutdown hook after the server stops, in reverse order,
within SHUTDOWN_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
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


def register(name: str, *, order: int, startup: Callable[[], None] | None = None,
             shutdown: Callable[[float], None] | None = None) -> None:
    """Register hooks; lower `order` starts first and shuts down last."""
    _hooks[name] = Hook(name, order, startup, shutdown)


def hooks() -> list[Hook]:
    return sorted(_hooks.values(), key=lambda hook: hook.order)


def startup() -> None:
    for hook in hooks():
        if hook.startup is not None:
            logger.info("start-up: %s", hook.name)
            hook.startup()


def shutdown(timeout: float) -> bool:
    """Run the shutdown hooks; True when all finished cleanly before the deadline."""
    deadline = time.monotonic() + timeout
    clean = True
    for hook in reversed(hooks()):
        if hook.shutdown is None:
            continue
        logger.info("shutdown: %s", hook.name)
        try:
            hook.shutdown(deadline)
        except Exception:
            clean = False
            logger.exception("shutdown hook %s failed", hook.name)
    return clean
