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

The base checks only what it owns (the databases, the channel layer, S3). Apps register their
own checks, capabilities and the figures /health reports (`check_register`, `figure_register`)
in their AppConfig.ready(), as they register lifecycle hooks: the base imports no app
(docs/architecture.md).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections

from weldr_agent import s3
from weldr_agent.databases import SHARED_DB, STATE_DB


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


CHECKS: dict[str, Callable[[], str]] = {
    "state_db": check_state_db,
    "shared_db": check_shared_db,
    "channel_layer": check_channel_layer,
    "s3": check_s3,
}
# Informational: "ok" or why not; never part of the status.
CAPABILITIES: dict[str, Callable[[], str]] = {}
_ALL: dict[str, Callable[[], str]] = {}


def check_register(name: str, check: Callable[[], str], *, required: bool = True) -> None:
    """Add an app's check to /health: required ones decide its status, the others are
    capabilities (reported, never a 503). Call from AppConfig.ready(), before the first round."""
    (CHECKS if required else CAPABILITIES)[name] = check
    _ALL.clear()
    _ALL.update({**CHECKS, **CAPABILITIES})


@dataclass(frozen=True)
class Figure:
    """A value /health reports beside its checks (a count, the runtime's name)."""

    value: Callable[[], Any]
    # The DRF field that documents it in /openapi.json.
    field: Any


FIGURES: dict[str, Figure] = {}


def figure_register(name: str, value: Callable[[], Any], *, field: Any) -> None:
    FIGURES[name] = Figure(value, field)


def figure_count(queryset: Callable[[], Any]) -> Callable[[], int]:
    """A figure counting rows; 0 when the state database fails (its check says why)."""
    def count() -> int:
        try:
            return queryset().count()
        except Exception:  # the state DB check already reports why
            return 0
    return count


def figures() -> dict[str, Any]:
    return {name: figure.value() for name, figure in FIGURES.items()}


_ALL.update({**CHECKS, **CAPABILITIES})


class Checks:
    """The last round's answers, and the checks of the current round still running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # One thread per check; apps register theirs after this module is imported.
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")
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
