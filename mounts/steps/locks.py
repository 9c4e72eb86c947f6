"""Locking: one operation per bucket at a time, across processes (agent, manage.py, scripts)."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from mounts import system
from mounts.errors import MountBusy


@contextlib.contextmanager
def bucket_lock(p: system.Paths, *, timeout: float) -> Iterator[None]:
    p.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(p.lock, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MountBusy() from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def try_bucket_lock(p: system.Paths) -> contextlib.AbstractContextManager[None] | None:
    """The bucket's lock when it is free right now, else None (an operation is in flight)."""
    try:
        lock = bucket_lock(p, timeout=0)
        lock.__enter__()
    except MountBusy:
        return None
    return lock
