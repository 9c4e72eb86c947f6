"""Refuse new work once shutdown has begun (503 `shutting_down`), so that load balancers and
clients move on while the running work finishes (docs/shutdown.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from weldr_agent import lifecycle


def _refusal() -> JsonResponse:
    response = JsonResponse(
        {"detail": "The agent is shutting down; retry on the next machine.",
         "code": "shutting_down"},
        status=503,
    )
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
