"""Start-up and shutdown hooks: reconcile the machine first, unmount everything last."""

from __future__ import annotations

import logging

from weldr_agent import lifecycle

logger = logging.getLogger("weldr.mounts")

# Mounts start before previews/exec (higher orders) and so shut down after them.
ORDER = 10


def startup() -> None:
    from mounts.services import mount_reconcile

    outcome = mount_reconcile()
    if outcome:
        logger.info("reconciled mounts: %s", outcome)


def shutdown(deadline: float) -> None:
    from mounts.services import mount_remove_all

    mount_remove_all(deadline=deadline)


def register() -> None:
    lifecycle.register("mounts", order=ORDER, startup=startup, shutdown=shutdown)
