"""Websocket authentication with the same credentials and classes as the HTTP API.

The handshake's headers (Authorization, Cookie, x-api-key) — or a `token` query parameter for
browsers, which cannot set headers on a websocket — go through DRF's authentication classes.
The principal (or None) lands in scope["principal"]; consumers close with 4401 without one.

A browser sends the cookie on a websocket whatever page opened it (a websocket has no CORS), so
a socket authenticated by the session cookie alone must come from an allowed Origin (CORS_ORIGIN
or the agent's own origin); otherwise scope["refused"] holds 4403 and the principal is None. A
token (query parameter or header) is not sent by the browser on its own: no Origin check.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.settings import api_settings

from weldr_agent.auth import origin_allowed


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
    request.COOKIES = parse_cookie(request.META.get("HTTP_COOKIE", ""))
    return request


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


CLOSE_ORIGIN_REFUSED = 4403


def _origin_refused(scope: dict[str, Any], principal: Any) -> bool:
    """True for a cookie-authenticated socket whose Origin is neither allowed nor our own."""
    request = _django_request(scope)
    if principal is None or "HTTP_AUTHORIZATION" in request.META \
            or "HTTP_X_API_KEY" in request.META or getattr(principal, "kind", "") != "session":
        return False
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        # Not a browser (browsers always send Origin on a websocket): nothing to forge.
        return False
    return not origin_allowed(origin, request.META.get("HTTP_HOST", ""))


class WebsocketAuthMiddleware:
    """ASGI middleware: scope["principal"] for websocket connections."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        principal = await database_sync_to_async(authenticate_scope)(scope)
        if _origin_refused(scope, principal):
            scope["refused"] = CLOSE_ORIGIN_REFUSED
            principal = None
        scope["principal"] = principal
        return await self.app(scope, receive, send)
