"""The lease renewal loop: one thread of the agent process (docs/mounts.md, "One writer").

Every MOUNT_LEASE_RENEW_SECONDS it renews the lease of every bucket mounted on this machine
(mounts.services.mount_leases_renew), which also stops the writers of a bucket whose lease was
taken over or could not be renewed in time. It runs from start-up until the mounts' shutdown
hook has unmounted everything: an unmount's final flush is still a write.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger("weldr.mounts")

_stop = threading.Event()
_thread: threading.Thread | None = None


def _loop() -> None:
    from mounts.services import mount_leases_renew

    while not _stop.wait(settings.MOUNT_LEASE_RENEW_SECONDS):
        try:
            outcome = mount_leases_renew()
            if any(state != "renewed" for state in outcome.values()):
                logger.warning("lease renewal: %s", outcome)
        except Exception:
            logger.exception("lease renewal failed")
        finally:
            close_old_connections()


def start() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, name="lease-renewal", daemon=True)
    _thread.start()


def stop(*, timeout: float) -> None:
    """Stop the loop; wait at most `timeout` seconds for a renewal in flight (a daemon thread:
    the process may exit under it)."""
    global _thread
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=max(timeout, 0))
        _thread = None
