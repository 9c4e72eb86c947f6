"""Typed API errors and the one exception handler that shapes every error body.

Every 4xx/5xx body is `{"detail": "<sentence>", "code": "<snake_case>"}`; validation errors add
`"errors": {field: [messages]}` with `"code": "invalid"` (docs/api.md).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from weldr_agent.runner import CommandError

logger = logging.getLogger("weldr.errors")


class APIError(exceptions.APIException):
    """Base of the service layer's errors: raise a subclass, the handler renders it."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "error"
    default_detail = "The request could not be completed."


class NotFoundError(APIError):
    status_code = status.HTTP_404_NOT_FOUND
    default_code = "not_found"
    default_detail = "Not found."


class ConflictError(APIError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class ServiceUnavailable(APIError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"
    default_detail = "A dependency is unavailable."


class SystemCommandError(APIError):
    """A system command failed; its detail carries the tail of the command's log."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "command_failed"
    default_detail = "A system command failed."


class PayloadTooLarge(APIError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.ParseError: "parse_error",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "throttled",
}


def _flatten(errors: Any) -> dict[str, list[str]]:
    if isinstance(errors, dict):
        flat: dict[str, list[str]] = {}
        for field, value in errors.items():
            if isinstance(value, dict):
                for sub, messages in _flatten(value).items():
                    flat[f"{field}.{sub}"] = messages
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                for index, item in enumerate(value):
                    for sub, messages in _flatten(item).items():
                        flat[f"{field}[{index}].{sub}"] = messages
            else:
                flat[str(field)] = [str(m) for m in (value if isinstance(value, list) else [value])]
        return flat
    messages = errors if isinstance(errors, list) else [errors]
    return {"non_field_errors": [str(m) for m in messages]}


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, Http404):
        exc = NotFoundError()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, CommandError):
        logger.error("system command failed: %s", exc)
        exc = SystemCommandError(str(exc))

    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = next(iter(errors.values()), ["Invalid input."])[0]
        field = next(iter(errors), "")
        detail = f"{field}: {first}" if field and field != "non_field_errors" else first
        response = Response(error_body(detail, "invalid", errors=errors), status=400)
        return response

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    if isinstance(detail, (list, dict)):
        detail = "; ".join(m for msgs in _flatten(detail).values() for m in msgs)
    code = _CODES.get(type(exc))
    if code is None:
        code = getattr(exc, "default_code", None) or "error"
        if isinstance(exc.detail, exceptions.ErrorDetail) and exc.detail.code:  # type: ignore[union-attr]
            code = exc.detail.code  # type: ignore[union-attr]
    # Typed errors may carry more than a sentence (mounts' bucket_in_use names the holder).
    response.data = error_body(str(detail), code, **getattr(exc, "extra", {}))
    return response


def json_error(detail: str, code: str, status_code: int) -> JsonResponse:
    """The error shape for responses made outside DRF (URL 404s, crashes, plain views)."""
    return JsonResponse(error_body(detail, code), status=status_code)


def handler404(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("No such endpoint.", "not_found", 404)


def handler500(request: Any) -> JsonResponse:
    return json_error("The agent hit an internal error; see its log.", "server_error", 500)


def handler400(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("Bad request.", "bad_request", 400)


def handler403(request: Any, exception: Exception | None = None) -> JsonResponse:
    return json_error("Forbidden.", "forbidden", 403)
