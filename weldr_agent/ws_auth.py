"""Websocket authentication with the same credentials and classes as the HTTP API.

The handshake's headers (Authorization, Cookie, x-api-key) — or a `token` query parameter for
browsers, which cannot set headers on a websocket — go through DRF's authentication classes.
The principal (or None) lands in scope["principal"]; consumers close with 4401 without one.

A browser sends its cookies with every websocket handshake, whichever page opened it, and the
handshake is a GET that CORS does not guard: a cookie counts only when the handshake's Origin is
the agent's own or one of CORS_ORIGIN (or absent: not a browser). Tokens count from anywhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings


def _django_request(scope: dict[str, Any]) -> HttpRequest:
    request = HttpRequest()
    request.method = "GET"
    request.path = scope.get("path", "")
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        request.META[key] = raw_value.decode("latin-1")
    token = parse_qs(scope.get("query_string", b"").decode()).get("token")
    if token and "HTTP_AUTHORIZATION" not in request.META:
        request.META["HTTP_AUTHORIZATION"] = f"Bearer {token[0]}"
    if not _origin_trusted(scope, request.META.get("HTTP_ORIGIN"),
                           request.META.get("HTTP_HOST", "")):
        # Another site's page: its handshake carries the user's cookies, not their intent.
        request.META.pop("HTTP_COOKIE", None)
    request.COOKIES = parse_cookie(request.META.get("HTTP_COOKIE", ""))
    return request


def _origin_trusted(scope: dict[str, Any], origin: str | None, host: str) -> bool:
    if origin is None:
        return True
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return origin in settings.CORS_ORIGIN or origin == f"{scheme}://{host}"


def authenticate_scope(scope: dict[str, Any]) -> Any:
    """The principal the HTTP API would see for these credentials, or None."""
    request = Request(_django_request(scope))
    for authenticator_class in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        try:
            found = authenticator_class().authenticate(request)
        except exceptions.APIException:
            return None
        if found is not None:
            principal = found[0]
            request.user = principal
            for permission_class in api_settings.DEFAULT_PERMISSION_CLASSES:
                try:
                    if not permission_class().has_permission(request, None):
                        return None
                except exceptions.APIException:
                    return None
            return principal
    return None


class WebsocketAuthMiddleware:
    """ASGI middleware: scope["principal"] for websocket connections."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["principal"] = await database_sync_to_async(authenticate_scope)(scope)
        return await self.app(scope, receive, send)
