"""The retry helper's pure parts: Retry-After parsing, the backoff bounds, what is retried."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import pytest

from workflows.providers.base import ProviderError, Turn
from workflows.providers.retry import (
    RetryableError,
    RetryPolicy,
    retry_after_seconds,
    status_error,
    with_retries,
)

FAST = RetryPolicy(max_attempts=4, base_seconds=0.001, max_seconds=0.01)


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    (None, None),
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after": "-2"}, 0.0),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "soon"}, None),
])
def test_retry_after_parsing(headers: dict[str, str] | None, expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 100 < retry_after_seconds({"retry-after": when}) <= 120


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=1.0, max_seconds=8.0)
    for attempt in range(1, 10):
        delays = [policy.delay(attempt, None) for _ in range(200)]
        assert all(0 <= d <= min(8.0, 2 ** (attempt - 1)) for d in delays)


def test_retry_after_is_a_floor_below_the_cap() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=0.001, max_seconds=30.0)
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(1, 3600.0) == 30.0


@pytest.mark.parametrize(("status", "transient"), [
    (400, False), (401, False), (403, False), (404, False), (422, False),
    (408, True), (429, True), (500, True), (502, True), (503, True), (529, True),
])
def test_status_classification(status: int, transient: bool) -> None:
    error = status_error("anthropic", status, "message from the provider")
    assert error.transient is transient
    assert "message from the provider" in str(error) and error.provider == "anthropic"


def attempts_of(errors: list[Exception]) -> tuple[Callable[[Callable[[str], None]], Turn], list]:
    calls: list[int] = []

    def attempt(relay: Callable[[str], None]) -> Turn:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        relay("ok")
        return Turn(text="ok", tool_calls=[], stop_reason="end_turn")

    return attempt, calls


def test_transient_errors_are_retried_until_success() -> None:
    attempt, calls = attempts_of([RetryableError("x", provider="p"),
                                  ProviderError("y", transient=True, provider="p")])
    seen: list[str] = []
    turn = with_retries(attempt, provider="p", on_text=seen.append, policy=FAST)
    assert (turn.text, seen, len(calls)) == ("ok", ["ok"], 3)


def test_final_errors_and_other_exceptions_are_not_retried() -> None:
    for error in (ProviderError("bad request", provider="p"), KeyError("bug")):
        attempt, calls = attempts_of([error])
        with pytest.raises(type(error)):
            with_retries(attempt, provider="p", on_text=lambda _: None, policy=FAST)
        assert len(calls) == 1


def test_attempts_are_bounded() -> None:
    attempt, calls = attempts_of([RetryableError(f"e{n}", provider="p") for n in range(9)])
    with pytest.raises(ProviderError, match="e3"):
        with_retries(attempt, provider="p", on_text=lambda _: None, policy=FAST)
    assert len(calls) == FAST.max_attempts


def test_no_wait_outlasts_the_callers_timeout() -> None:
    slow = RetryPolicy(max_attempts=5, base_seconds=0.001, max_seconds=60.0)
    attempt, calls = attempts_of([RetryableError("busy", provider="p", retry_after=30.0)])
    with pytest.raises(ProviderError, match="busy"):
        with_retries(attempt, provider="p", on_text=lambda _: None, policy=slow, timeout=5.0)
    assert len(calls) == 1
