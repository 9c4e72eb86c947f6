"""Dependency checks behind `GET /health`: each returns "ok" or a sentence saying what failed.

A platform's probe gives up after a few seconds (Fly: the check's `timeout`), and an S3 endpoint
or a database can take far longer to fail. So the checks run at once, each in its own thread, and
`run_checks` answers after HEALTH_CHECK_TIMEOUT_SECONDS at the latest: a check still running then
reports "no answer" and goes on in the background (the next round reuses it rather than
starting another). Answers are kept HEALTH_CACHE_SECONDS, so a flood of anonymous `/health`
requests costs one round of checks per window.

Capabilities (CAPABILITIES) run in the same round, bounded and cached alike, but are reported
apart: they say what this machine offers beyond the required dependencies (loop devices for the
image layout), and the agent works without them, so a missing one never makes /health 503.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections

from weldr_agent import s3
from weldr_agent.routers import SHARED_DB, STATE_DB


def _database(alias: str) -> str:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # any driver error means "not usable"
        return f"{alias} database unreachable: {error}".strip()
    finally:
        # The check's thread must not keep a connection of the shared database open.
        connections[alias].close()


def check_state_db() -> str:
    return _database(STATE_DB)


def check_shared_db() -> str:
    return _database(SHARED_DB)


async def _channel_roundtrip() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer is configured"
    channel = await layer.new_channel("health.")
    token = secrets.token_hex(8)
    await layer.send(channel, {"type": "health.ping", "token": token})
    message = await layer.receive(channel)
    return "ok" if message.get("token") == token else "channel layer returned a wrong message"


def check_channel_layer() -> str:
    try:
        return async_to_sync(_channel_roundtrip)()
    except Exception as error:
        return f"channel layer unreachable: {error}"


def check_s3() -> str:
    try:
        s3.client().list_buckets()
        return "ok"
    except Exception as error:
        return f"S3 endpoint unreachable or credentials rejected: {error}"


def check_fuse() -> str:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
        return "ok"
    except OSError as error:
        return f"/dev/fuse is not usable: {error.strerror}"


def check_oci_runtime() -> str:
    from previews.oci import detector

    name = detector.detect()
    return "ok" if name else f"no OCI runtime starts a container: {detector.error}"


def check_loop_devices() -> str:
    from mounts import capabilities

    reason = capabilities.loop_devices()
    if reason == capabilities.OK:
        return "ok"
    return f"{reason}: the image layout is off; new volumes get the files layout"


CHECKS: dict[str, Callable[[], str]] = {
    "state_db": check_state_db,
    "shared_db": check_shared_db,
    "channel_layer": check_channel_layer,
    "s3": check_s3,
    "fuse": check_fuse,
    "oci_runtime": check_oci_runtime,
}
# Informational: "ok" or why not; never part of the status.
CAPABILITIES: dict[str, Callable[[], str]] = {
    "loop_devices": check_loop_devices,
}
_ALL = {**CHECKS, **CAPABILITIES}


class Checks:
    """The last round's answers, and the checks of the current round still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=len(_ALL),
                                            thread_name_prefix="health")
        self._running: dict[str, Future[str]] = {}
        self._answers: dict[str, str] = {}
        # None until a round has finished: never "fresh" because the clock is near zero.
        self._answered_at: float | None = None

    def clear(self) -> None:
        """Forget the answers and the checks still running (the next round starts afresh)."""
        with self._lock:
            self._answered_at = None
            self._running.clear()

    def run(self) -> dict[str, str]:
        with self._lock:
            if self._answered_at is not None and \
                    time.monotonic() - self._answered_at < settings.HEALTH_CACHE_SECONDS:
                return dict(self._answers)
            for name, check in _ALL.items():
                if name not in self._running:
                    self._running[name] = self._executor.submit(check)
            running = dict(self._running)
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        wait(running.values(), timeout=timeout)
        answers = {}
        for name, future in running.items():
            if future.done():
                answers[name] = _answer(future)
            else:
                answers[name] = f"no answer within {timeout:g} s (still checking)"
        with self._lock:
            for name, future in running.items():
                if future.done() and self._running.get(name) is future:
                    del self._running[name]
            self._answers, self._answered_at = answers, time.monotonic()
        return dict(answers)


def _answer(future: Future[str]) -> str:
    try:
        return future.result()
    except Exception as error:  # a check that raised is a failed check, not a failed /health
        return f"the check failed: {error}"


checks = Checks()


def run_checks() -> tuple[dict[str, str], dict[str, str]]:
    """(required checks, capabilities) of one round."""
    answers = checks.run()
    return ({name: answers[name] for name in CHECKS},
            {name: answers[name] for name in CAPABILITIES})
