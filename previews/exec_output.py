"""How command output travels in JSON and SSE: text when it is UTF-8, base64 when it is not.

JSON strings cannot carry arbitrary bytes. Output that decodes as UTF-8 is sent as text only;
output that does not is sent as text with U+FFFD replacements (readable) plus the exact bytes
in a `*_base64` field (lossless). A UTF-8 character split across two reads is held back until
its last byte arrives, so chunk boundaries never make valid output look invalid.
"""

from __future__ import annotations

import base64
import json
from typing import Any


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
