"""How command output travels in JSON and SSE: text when it is UTF-8, base64 when it is not.

JSON strings cannot carry arbitrary bytes. Output that decodes as UTF-8 is sent as text only;
output that does not is sent as text with U+FFFD replacements (readable) plus the exact bytes
in a `*_base64` field (lossless). A UTF-8 character split across two reads is held back until
its last byte arrives, so chunk boundaries never make valid output look invalid.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commands.execution import Event


def complete_prefix(data: bytes) -> int:
    """Length of `data` without a trailing, still incomplete UTF-8 sequence."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
            4 if byte & 0xF8 == 0xF0 else 1
        return len(data) - back if need > back else len(data)
    return len(data)


def text_fields(data: bytes, name: str) -> dict[str, str]:
    """{name: text} for UTF-8, plus {name_base64: bytes} when it is not."""
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {name: data.decode("utf-8", "replace"),
                f"{name}_base64": base64.b64encode(data).decode("ascii")}


class Splitter:
    """Per stream: feed raw reads, get back chunks that end on a character boundary."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self.pending + data
        cut = complete_prefix(data)
        self.pending = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        data, self.pending = self.pending, b""
        return data


def sse(event: str, payload: dict[str, Any], *, event_id: int | None = None) -> bytes:
    """One server-sent event; `data` is a single JSON line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(payload)}\n\n".encode()


async def exec_frames(events: AsyncIterator[Event], *, first_id: int = 0,
                      before: Iterable[Event] = ()) -> AsyncIterator[bytes]:
    """SSE frames of a command's events; event number N (from 0) has `id: N`.

    `before` are the events a resuming client already has (those up to its Last-Event-ID):
    fed to the splitters without being sent, so that a character split across the resume point
    is still sent whole. Output held back until `exit` is sent without an id: a client that
    reconnects before `exit` gets it again, with `exit`.
    """
    splitters = {"stdout": Splitter(), "stderr": Splitter()}
    for event in before:
        if event.kind in splitters:
            splitters[event.kind].feed(event.data)
    event_id = first_id
    async for event in events:
        if event.kind in splitters:
            chunk = splitters[event.kind].feed(event.data)
            if chunk:
                yield sse(event.kind, text_fields(chunk, "data"), event_id=event_id)
        else:
            if event.kind == "exit":
                for kind, splitter in splitters.items():
                    if rest := splitter.flush():
                        yield sse(kind, text_fields(rest, "data"))
            yield sse(event.kind, event.info, event_id=event_id)
        event_id += 1
