"""Following app.log as Server-Sent Events, without holding a thread per client.

Each line's event id is the byte offset just past it in app.log, so a client that reconnects
with `Last-Event-ID` continues at the next line: nothing repeated, nothing skipped. An offset
beyond the file's end means the log was rotated (copy-truncate) since: it starts at the top.
Keep-alive comments and `retry:` come from weldr_agent.sse.guarded. Also the log's plain tail
and its rotation (copy-truncate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from asgiref.sync import sync_to_async

logger = logging.getLogger("weldr.previews")

POLL_SECONDS = 0.2
CHUNK = 64 * 1024
TAIL_MAX_BYTES = 4 * 1024 * 1024


def _sse(event: str, data: object, *, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def tail_start(path: Path, lines: int) -> int:
    """The offset where the last `lines` complete lines of the file begin, looking back at
    most TAIL_MAX_BYTES (the app writes this file: it may hold one endless line)."""
    end = _size(path)
    data, start = b"", end
    with open(path, "rb") if end else open(os.devnull, "rb") as log:
        while start > 0 and end - start < TAIL_MAX_BYTES and data.count(b"\n") <= lines:
            step = min(CHUNK, start)
            start -= step
            log.seek(start)
            data = log.read(step) + data
    # The newline before the first kept line: `lines` newlines back from the last one.
    newline = data.rfind(b"\n")
    for _ in range(lines):
        if newline < 0:
            break
        newline = data.rfind(b"\n", 0, newline)
    if newline >= 0:
        return start + newline + 1
    # Fewer lines than asked for: all of them, without a line cut off at the window's start.
    return 0 if start == 0 else start + data.find(b"\n") + 1


def log_rotate(path: Path, *, max_bytes: int) -> bool:
    """Copy-truncate `path` to `path.1` when it is larger than `max_bytes`.

    The container holds the log open with O_APPEND, so truncating in place is safe: its next
    write lands at the new end.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes or size == 0:
        return False
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return True


def last_lines(path: Path, lines: int) -> str:
    """The last `lines` lines of `path` ('' when there is none): GET /previews/{bucket}/logs."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            end = log.tell()
            chunk, data = 64 * 1024, b""
            while end > 0 and data.count(b"\n") <= lines:
                start = max(0, end - chunk)
                log.seek(start)
                data = log.read(end - start) + data
                end = start
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")


async def follow(path: Path, *, tail: int, last_id: int | None,
                 still_active: Callable[[], bool]) -> AsyncIterator[bytes]:
    """SSE: the last `tail` lines (or the lines after `last_id`), then every new line; ends
    with `end` when the app ends. A client that goes cancels this generator (ASGI
    http.disconnect): the `finally` runs and nothing keeps polling."""
    logger.info("log follow started: %s", path)
    if last_id is None or last_id > _size(path):
        position = await sync_to_async(tail_start)(path, tail)
    else:
        position = last_id
    try:
        pending = b""
        idle_checks = 0
        while True:
            size = _size(path)
            if size < position + len(pending):
                # Rotated (copy-truncate): start over at the top of the new file.
                position, pending = 0, b""
            read_at = position + len(pending)
            if size > read_at:
                with open(path, "rb") as log:
                    log.seek(read_at)
                    data = log.read(min(size - read_at, CHUNK))
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    position += len(line) + 1
                    yield _sse("log", {"line": line.decode("utf-8", "replace")},
                               event_id=position)
                if len(pending) >= CHUNK:
                    # The app decides what it prints: a line that never ends is sent in
                    # pieces rather than held in the agent's memory.
                    position += len(pending)
                    yield _sse("log", {"line": pending.decode("utf-8", "replace")},
                               event_id=position)
                    pending = b""
                continue
            idle_checks += 1
            if idle_checks % 5 == 0 and not await sync_to_async(still_active)():
                if pending:
                    position += len(pending)
                    yield _sse("log", {"line": pending.decode("utf-8", "replace")},
                               event_id=position)
                yield _sse("end", {})
                return
            await asyncio.sleep(POLL_SECONDS)
    finally:
        logger.info("log follow ended: %s", path)
