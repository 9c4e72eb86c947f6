"""Retries for provider calls, shared by every adapter.

The SDKs' own retries are off (max_retries=0 / one attempt) so that there is exactly one policy:
transient errors (429, 5xx, overloaded, timeouts, dropped connections) are retried with
exponential backoff and full jitter, a bounded number of times, waiting at least as long as the
provider's Retry-After asks. A turn that already streamed text to `on_text` is never retried: the
engine has published those deltas, and a second attempt would repeat or contradict them.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from django.conf import settings

from .base import ProviderError, Turn

log = logging.getLogger(__name__)

# Statuses worth another attempt: timeouts, conflicts on the provider's side, rate limits,
# every 5xx (Anthropic's 529 "overloaded" included).
TRANSIENT_STATUSES = frozenset({408, 409, 429})


class RetryableError(ProviderError):
    """A transient ProviderError that may carry the provider's Retry-After, in seconds."""

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, transient=True, provider=provider)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        return cls(max_attempts=settings.LLM_MAX_ATTEMPTS,
                   base_seconds=settings.LLM_RETRY_BASE_SECONDS,
                   max_seconds=settings.LLM_RETRY_MAX_SECONDS)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        backoff = random.uniform(0, min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1)))
        if retry_after is None:
            return backoff
        # The provider's own figure wins over our guess, capped so a bogus header cannot park a
        # run for hours.
        return min(max(retry_after, backoff), max(self.max_seconds, 0.0))


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def status_error(provider: str, status: int, message: str,
                 headers: Mapping[str, str] | None = None) -> ProviderError:
    """The ProviderError for an HTTP error status, transient or not."""
    text = f"{provider} returned HTTP {status}: {message}"
    if is_transient_status(status):
        return RetryableError(text, provider=provider, retry_after=retry_after_seconds(headers))
    return ProviderError(text, transient=False, provider=provider)


def connection_failed(provider: str, error: Exception) -> RetryableError:
    """An SDK's APIConnectionError (Anthropic's and OpenAI's SDKs share the shape: `message`,
    the cause underneath): the request may not have reached the provider, so a retry may."""
    detail = f" ({error.__cause__})" if error.__cause__ else ""
    return RetryableError(f"{provider}: {getattr(error, 'message', error)}{detail}",
                          provider=provider)


def connection_lost(provider: str, error: Exception, *, what: str = "connection lost"
                    ) -> RetryableError:
    """A connection dropped mid-stream, which surfaces as the HTTP library's own error."""
    return RetryableError(f"{provider}: {what}: {error}", provider=provider)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Parse `retry-after-ms`, or `retry-after` as seconds or an HTTP date; None if absent."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def with_retries(attempt: Callable[[Callable[[str], None]], Turn], *, provider: str,
                 on_text: Callable[[str], None], policy: RetryPolicy | None = None,
                 timeout: float | None = None) -> Turn:
    """Run `attempt(relay)` until it returns a Turn, retrying transient ProviderErrors.

    `relay` forwards text to `on_text` and notes that output has left; after that a failure is
    final (raised with transient=False, the original error as its cause). No wait is started
    that would end past `timeout` seconds from now: the caller's budget is the caller's.
    """
    policy = policy or RetryPolicy.from_settings()
    deadline = time.monotonic() + timeout if timeout is not None else None
    for number in range(1, policy.max_attempts + 1):
        streamed = False

        def relay(delta: str) -> None:
            nonlocal streamed
            streamed = True
            on_text(delta)

        try:
            return attempt(relay)
        except ProviderError as error:
            if streamed and error.transient:
                raise ProviderError(f"{error} (after partial output; not retried)",
                                    transient=False, provider=provider) from error
            if not error.transient or number == policy.max_attempts:
                raise
            delay = policy.delay(number, getattr(error, "retry_after", None))
            if deadline is not None and time.monotonic() + delay >= deadline:
                raise
            log.warning("%s attempt %d/%d failed (%s); retrying in %.2fs", provider, number,
                        policy.max_attempts, error, delay,
                        extra={"provider": provider, "attempt": number, "delay": delay})
            time.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
