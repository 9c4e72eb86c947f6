"""Middleware of the agent: the request-body cap and the refusal of new work during shutdown.

RequestBodyLimitMiddleware: Django checks DATA_UPLOAD_MAX_MEMORY_SIZE (MAX_REQUEST_BODY_BYTES)
only when something reads `request.body` (DRF's JSON parser does; a view reading
`request.stream` does not), and then the error surfaces from deep inside the view. This answers
413 `payload_too_large` from the Content-Length alone, before any view, authentication or
parsing runs. A view that accepts larger bodies (file uploads) declares `max_body_bytes = N` on
its class and reads `request.stream`. A chunked body without Content-Length is 411
`length_required`: DRF would read it as empty.

ShutdownMiddleware: once shutdown has begun, new requests get 503 `shutting_down`, so that load
balancers and clients move on while the running work finishes (docs/shutdown.md).

Every middleware here runs on the event loop for API requests, without a trip to a thread:
Django adapts a sync-only middleware (WhiteNoise), and every MiddlewareMixin step
(process_request, process_view, process_response), with a hop to the request's worker thread
and back — ~0.5 ms each here, 5 ms of a 22 ms exec round trip (docs/exec.md). Hence:

StaticFilesMiddleware: WhiteNoise, async-capable.
SecurityMiddleware, CommonMiddleware: Django's, run inline on the event loop (they do no I/O).
AdminMiddleware: sessions, authentication and messages — the admin's, and only the admin's
(the API authenticates per request with its own classes and is CSRF-exempt) — applied to
/admin/ only. The admin's views protect themselves against CSRF (csrf_protect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware import common, security
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string
from whitenoise.middleware import WhiteNoiseMiddleware

from weldr_agent import lifecycle
from weldr_agent.errors import json_error


def _declared_limit(view_func: Callable[..., Any]) -> int | None:
    """The view's own body cap: `max_body_bytes`, an int or a callable read per request (so it
    may follow a setting)."""
    view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
    limit = getattr(view_class, "max_body_bytes", None) or getattr(view_func, "max_body_bytes",
                                                                   None)
    return limit() if callable(limit) else limit


def body_limit(view_func: Callable[..., Any]) -> int:
    return int(_declared_limit(view_func) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


class RequestBodyLimitMiddleware(MiddlewareMixin):
    # A coroutine: Django calls it on the event loop (a sync process_view costs a thread hop).
    async def process_view(self, request: HttpRequest, view_func: Callable[..., Any],
                           view_args: Any, view_kwargs: Any) -> HttpResponse | None:
        raw_length = request.META.get("CONTENT_LENGTH")
        streaming = _declared_limit(view_func) is not None
        # A view that declares max_body_bytes reads request.stream and enforces its cap itself,
        # so a chunked upload is its to refuse (413) as it reads.
        if not raw_length and not streaming \
                and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # DRF reads a body only up to Content-Length: a chunked body would be read as empty.
            return json_error("Send the body with a Content-Length header; chunked request "
                              "bodies are not accepted.", "length_required", 411)
        try:
            length = int(raw_length or 0)
        except ValueError:
            return json_error("The Content-Length header is not a number.", "bad_request", 400)
        limit = body_limit(view_func)
        if length > limit:
            return json_error(
                f"The request body is {length} bytes; this endpoint accepts at most {limit}.",
                "payload_too_large", 413,
            )
        return None


def _refusal() -> JsonResponse:
    response = json_error("The agent is shutting down; retry on the next machine.",
                          "shutting_down", 503)
    response["Retry-After"] = "5"
    response["Connection"] = "close"
    return response


class ShutdownMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        if lifecycle.shutting_down():
            return _refusal()
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if lifecycle.shutting_down():
            return _refusal()
        return await self.get_response(request)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise's static files (admin, /docs), async-capable: a request that is not for a
    static file goes on without leaving the event loop."""

    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # DEBUG: looks on disk
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


class _Inline:
    """For a MiddlewareMixin middleware that does no I/O: its steps run on the event loop."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)  # type: ignore[attr-defined]
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response


class SecurityMiddleware(_Inline, security.SecurityMiddleware):
    pass


class CommonMiddleware(_Inline, common.CommonMiddleware):
    pass


ADMIN_PREFIX = "/admin/"
ADMIN_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]


class AdminMiddleware:
    """ADMIN_MIDDLEWARE around requests for the admin; every other request goes straight on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        chain = get_response
        for path in reversed(ADMIN_MIDDLEWARE):
            chain = import_string(path)(chain)
        self.admin = chain
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if request.path_info.startswith(ADMIN_PREFIX):
            return self.admin(request)
        return self.get_response(request)
