"""URLs for tests/test_request_path.py: views that tell which thread served them."""

from __future__ import annotations

import threading

from django.http import HttpRequest, JsonResponse
from django.urls import path

# Set by a test: the view waits for it (two requests in flight at once).
gate = threading.Event()


def thread_name(request: HttpRequest) -> JsonResponse:
    if request.GET.get("wait"):
        gate.wait(10)
    return JsonResponse({"thread": threading.current_thread().name,
                         "ident": threading.get_ident()})


async def async_thread_name(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"thread": threading.current_thread().name,
                         "ident": threading.get_ident()})


urlpatterns = [path("thread", thread_name), path("async-thread", async_thread_name)]
