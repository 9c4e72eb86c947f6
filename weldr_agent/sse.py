"""What every server-sent-events endpoint shares: content negotiation and response headers.

A browser's `EventSource` sends `Accept: text/event-stream`; a view that offers only JSON answers
it with 406. An SSE view lists `EventStreamRenderer` beside JSON so that the event stream, `*/*`
and an absent Accept header are all accepted, and its errors still come out as JSON.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from rest_framework.renderers import BaseRenderer, JSONRenderer

# No caching, and no buffering by a proxy (nginx and Fly's honour X-Accel-Buffering).
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamRenderer(BaseRenderer):
    """Accepts `text/event-stream`; what it renders is an error body, as JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = None

    def render(self, data: Any, accepted_media_type: str | None = None,
               renderer_context: dict | None = None) -> bytes:
        return JSONRenderer().render(data)


class EventStreamNegotiation:
    """Mixin for an APIView that streams events: JSON or an event stream is acceptable, and an
    error is always JSON (with its own content type), whatever the client asked for."""

    renderer_classes = [JSONRenderer, EventStreamRenderer]

    def handle_exception(self, exc: Exception) -> Any:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)  # type: ignore[misc]


def sse_response(stream: Any) -> StreamingHttpResponse:
    """A streaming response of `stream` (an iterator of SSE frames) with the SSE headers."""
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    for name, value in SSE_HEADERS.items():
        response[name] = value
    return response
