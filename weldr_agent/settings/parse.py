"""Reading the environment: one parser per kind of value, each naming the variable it rejects.

A bad value stops start-up with `ImproperlyConfigured` that names the variable and what it must
be; every area's settings module reads its variables through these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()


def choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _ranged(name: str, value: Callable[[], float], kind: str, low: float, high: float) -> Any:
    """`value()` read as `kind`, within [low, high]; ImproperlyConfigured naming `name` else."""
    try:
        read = value()
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"{name} must be {kind}: {error}") from error
    if not low <= read <= high:
        raise ImproperlyConfigured(f"{name} must be between {low} and {high}; got {read}.")
    return read


def integer(name: str, default: int, *, low: int, high: int) -> int:
    return int(_ranged(name, lambda: env.int(name, default=default), "a whole number", low, high))


def optional_integer(name: str, *, low: int, high: int) -> int | None:
    if not env.str(name, default=""):
        return None
    return integer(name, 0, low=low, high=high)


def number(name: str, default: float, *, low: float, high: float) -> float:
    return float(_ranged(name, lambda: env.float(name, default=default), "a number", low, high))


def boolean(name: str, default: bool) -> bool:
    raw = env.str(name, default="1" if default else "0").strip().lower()
    if raw not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise ImproperlyConfigured(f"{name} must be 1 or 0 (true/false); got {raw!r}.")
    return raw in {"1", "true", "yes", "on"}


_DURATION = re.compile(r"^\d+(ms|s|m|h)?$")


def duration(name: str, default: str) -> str:
    value = env.str(name, default=default).strip()
    if not _DURATION.match(value):
        raise ImproperlyConfigured(f"{name} must be a duration like 30s, 5m or 1h; got {value!r}.")
    return value
