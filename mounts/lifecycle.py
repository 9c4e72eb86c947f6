"""Start-up and shutdown hooks: reconcile the machine first, unmount everything last."""

from __future__ import annotations

import logging
import time

from weldr_agent import lifecycle

logger = logging.getLogger("weldr.mounts")

# Mounts start before previews/exec (higher orders) and so shut down after them.
ORDER = 10


def startup() -> None:
    from mounts import renewal
    from mounts.services import mount_reconcile

    _loop_devices_report()
    outcome = mount_reconcile()
    if outcome:
        logger.info("reconciled mounts: %s", outcome)
    # After reconcile took back this machine's leases, before any request can mount.
    renewal.start()


def _loop_devices_report() -> None:
    """Say once, where an operator looks first, that the image layout is off on this machine."""
    from django.conf import settings

    from mounts import capabilities
    from mounts.services import workspace_machine

    reason = capabilities.loop_devices()
    if reason == capabilities.OK or not workspace_machine().layouts:
        return
    logger.warning(
        "LOOP DEVICES UNAVAILABLE: %s. The image layout is off on this machine: new volumes "
        "get the files layout%s, and mounting an image volume answers 409 layout_unavailable "
        "(GET /health: capabilities.loop_devices).", reason,
        " (WORKSPACE_LAYOUT=image is overridden)" if settings.WORKSPACE_LAYOUT == "image" else "")


def shutdown(deadline: float) -> None:
    from mounts import renewal
    from mounts.services import mount_remove_all

    try:
        # Unmounting releases each lease; renewal goes on meanwhile (a final flush writes).
        mount_remove_all(deadline=deadline)
    finally:
        renewal.stop(timeout=deadline - time.monotonic())


def register() -> None:
    lifecycle.register("mounts", order=ORDER, startup=startup, shutdown=shutdown)
