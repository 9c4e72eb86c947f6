"""Helpers for the command tests: host process scans and an incremental SSE reader."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import httpx

# keyctl(2): refused by the sandboxes' seccomp profile, allowed to any process without it.
KEYCTL = {"x86_64": 250, "aarch64": 219}[os.uname().machine]


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (the sandbox's processes included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def sse_events(response: httpx.Response,
               deadline: float | None = None) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs, parsed as the lines arrive; until `deadline` (time.monotonic())
    if given — keep-alive comments keep a quiet stream from ever timing out."""
    event, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: "):
            data = line[len("data: "):]
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""
        if deadline is not None and time.monotonic() > deadline:
            return
