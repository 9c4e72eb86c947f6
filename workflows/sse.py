"""The SSE stream of a branch's events: subscribe, replay from the database, then go live."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from workflows.streams import EventCursor, LiveEvent, last_seq, subscribed


def sse_frame(event: dict[str, Any]) -> str:
    if isinstance(event, LiveEvent):
        return event.sse
    data = json.dumps(event["data"], separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"


def sse_frames(events: list[dict[str, Any]]) -> str:
    """Several events as one chunk: one write to the client, not one per event."""
    return "".join(sse_frame(event) for event in events)


async def event_stream(*, branch_id: str, last_id: int | None) -> AsyncIterator[str]:
    """Events after `last_id` (or from now when None), then live ones.

    Keep-alive comments, `retry:` and the end at shutdown come from weldr_agent.sse.guarded.
    """
    # Subscribe before reading the database: an event committed in between is seen twice at
    # worst (and dropped by the cursor), never missed.
    async with subscribed(branch_id) as subscription:
        cursor = EventCursor(branch_id, await last_seq(branch_id) if last_id is None else last_id)
        yield ": connected\n\n"
        if replay := await cursor.catch_up():
            yield sse_frames(replay)
        while True:
            # Quiet for a keep-alive interval: the database is also read, in case a published
            # batch was lost.
            live = await subscription.receive(settings.SSE_KEEPALIVE_SECONDS)
            if events := await subscription.resolve(cursor, live):
                yield sse_frames(events)
