"""Content negotiation: DRF's, answered at once when the client states no preference.

Most API clients send no `Accept` header (the standard library's http.client) or `*/*`
(httpx, requests, curl); DRF parses even those into media types and matches them against each
renderer, ~0.07 ms of every request here (docs/exec.md, "Measured"). For exactly those two
the answer is DRF's own — the view's first renderer, with its media type — without the
parsing; any other header (`text/event-stream`, a list, parameters, an empty one) and any
`?format=` go through DRF's negotiation unchanged.
"""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request: Any, renderers: list[Any],
                        format_suffix: str | None = None) -> tuple[Any, str]:
        if (format_suffix is None and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
                and self.settings.URL_FORMAT_OVERRIDE not in request.query_params):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)
