"""A preview's app decides what app.log holds: a line that never ends must not pile up in the
agent's memory while a client follows the log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from previews import logs


async def _collect(path: Path) -> list[tuple[int, str]]:
    frames = []
    async for frame in logs.follow(path, tail=10, last_id=None, still_active=lambda: False):
        text = frame.decode()
        if text.startswith("id: "):
            head, _, data = text.partition("\ndata: ")
            frames.append((int(head.split("\n")[0][4:]), json.loads(data)["line"]))
    return frames


def test_an_endless_line_is_sent_in_pieces_with_resumable_ids(tmp_path: Path) -> None:
    # given: 1 MiB without a newline, then a short line
    path = tmp_path / "app.log"
    path.write_bytes(b"x" * (1024 * 1024) + b"\nafter\n")

    # when: the log is followed from the start
    frames = asyncio.run(_collect(path))

    # then: no piece is larger than a read, and the ids are the offsets just past each piece
    assert max(len(line) for _, line in frames) <= logs.CHUNK
    assert "".join(line for _, line in frames[:-1]) == "x" * (1024 * 1024)
    assert frames[-1] == (path.stat().st_size, "after")
    ids = [event_id for event_id, _ in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
