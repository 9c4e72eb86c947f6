"""daphne, with request bodies capped before they are buffered.

daphne (Twisted) reads a request's whole body — into memory, or a temporary file past 100 KB —
before the ASGI application sees the request, so no cap checked in Django (RequestBodyLimit-
Middleware, the files API's upload cap) keeps a 10 GB body, authenticated or not, off the
agent's disk. The request class below counts the body as it arrives and refuses, with 413
`payload_too_large`, a declared Content-Length or a chunked body larger than the largest body
any endpoint accepts (MAX_REQUEST_BODY_BYTES or FILE_UPLOAD_MAX_BYTES). Each endpoint's own,
smaller cap still applies in Django.

The refusal is written at once; the rest of the body is read and dropped (closing a socket with
unread data sends a reset, which can destroy the answer before the client reads it), and the
connection is closed when the body ends.
"""

from __future__ import annotations

import json
from typing import Any

import daphne.server
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings

from weldr_agent.errors import error_body


def body_ceiling() -> int:
    return max(settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.FILE_UPLOAD_MAX_BYTES)


def _refusal(limit: int) -> bytes:
    body = json.dumps(error_body(
        f"The request body is larger than {limit} bytes, the most any endpoint accepts.",
        "payload_too_large")).encode()
    head = ("HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class CappedRequest(WebRequest):
    received = 0
    refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Twisted parses a POST's Content-Type (through the email package: ~0.1 ms) to decode
        # form bodies into `request.args`; daphne hands the ASGI application the raw body and
        # never reads `args`.
        self._parsePOSTFormSubmission = False

    def gotLength(self, length: int | None) -> None:
        limit = body_ceiling()
        if length is not None and length > limit:
            self._refuse(limit)
            length = 0  # nothing will be kept
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self.received += len(data)
        limit = body_ceiling()
        if self.received > limit:
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.refused:  # the body has ended: now the connection can close cleanly
            self.channel.transport.loseConnection()
            return
        super().process()

    def _refuse(self, limit: int) -> None:
        self.refused = True
        self.channel.transport.write(_refusal(limit))


class CappedHTTPFactory(HTTPFactory):
    def log(self, request: Any) -> None:
        """No access log line from Twisted: formatted for every request into Twisted's log,
        which nothing here reads (daphne logs accesses itself, at its own verbosity)."""

    def buildProtocol(self, addr):  # type: ignore[no-untyped-def]
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = CappedRequest
        return protocol


def cap_request_bodies() -> None:
    """Make daphne's server build capped requests (call before `Server.run`)."""
    daphne.server.HTTPFactory = CappedHTTPFactory
