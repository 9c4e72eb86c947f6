"""Typed errors: every non-2xx answer of the agent becomes an `APIError` subclass carrying the
API's `code` (`{"detail", "code", "errors"?}`, docs/api.md); transport failures are
`WeldrConnectionError` / `WeldrTimeout`."""

from __future__ import annotations

from typing import Any

import httpx


class WeldrError(Exception):
    """Base of everything the SDK raises."""


class WeldrConnectionError(WeldrError):
    """The agent could not be reached, or the connection broke."""


class WeldrTimeout(WeldrConnectionError):
    """The agent did not answer within the configured timeout."""


class APIError(WeldrError):
    """The agent answered with an error: `status`, `code` (snake_case), `detail` (a sentence),
    `errors` (validation errors by field) and the whole `body`."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body
        self.errors: dict[str, list[str]] = body.get("errors") or {}


class BadRequestError(APIError):
    """400: the request is wrong (`invalid`, `invalid_path`, `invalid_bucket`, …)."""


class AuthenticationError(APIError):
    """401 `not_authenticated`: no credential, or a bad one."""


class PermissionDeniedError(APIError):
    """403 `forbidden`."""


class NotFoundError(APIError):
    """404: `not_found`, `not_mounted`, `no_preview`, `no_exec`, …"""


class ConflictError(APIError):
    """409: `bucket_in_use`, `not_mounted`, `preview_exists`, `run_active`, …"""


class PayloadTooLargeError(APIError):
    """413 `payload_too_large`."""


class RateLimitedError(APIError):
    """429: `too_many_commands`, `too_many_streams`."""


class ServerError(APIError):
    """5xx: the machine failed (`mount_failed`, `storage_unavailable`, `shutting_down`, …)."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError,
    404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError, 429: RateLimitedError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The typed error of a read error response (its body is the API's error shape, or not)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"detail": response.text[:500] or response.reason_phrase, "code": "error"}
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return kind(status, str(body.get("code") or "error"), str(body.get("detail") or ""), body)
