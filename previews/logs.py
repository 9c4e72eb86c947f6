"""Following app.log as Server-Sent Events, without holding a thread per client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from asgiref.sync import sync_to_async

logger = logging.getLogger("weldr.previews")

POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
CHUNK = 64 * 1024


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def follow(path: Path, *, initial: str, still_active) -> AsyncIterator[bytes]:  # type: ignore[no-untyped-def]
    """SSE: the tail first, then every new line; ends when the app ends or the client goes.

    A client that disconnects cancels this generator (ASGI http.disconnect): the `finally`
    runs and nothing keeps polling.
    """
    logger.info("log follow started: %s", path)
    try:
        for line in initial.splitlines():
            yield _sse("log", {"line": line})
        position = path.stat().st_size if path.exists() else 0
        pending = b""
        last_sent = time.monotonic()
        idle_checks = 0
        while True:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                size = 0
            if size < position:
                # Rotated (copy-truncate): start over at the top of the new file.
                position = 0
            if size > position:
                with open(path, "rb") as log:
                    log.seek(position)
                    data = log.read(min(size - position, CHUNK))
                position += len(data)
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    yield _sse("log", {"line": line.decode("utf-8", "replace")})
                last_sent = time.monotonic()
                continue
            idle_checks += 1
            if idle_checks % 5 == 0 and not await sync_to_async(still_active)():
                if pending:
                    yield _sse("log", {"line": pending.decode("utf-8", "replace")})
                yield _sse("end", {})
                return
            if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(POLL_SECONDS)
    finally:
        logger.info("log follow ended: %s", path)
