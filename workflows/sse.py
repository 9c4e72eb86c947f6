"""The SSE stream of a branch's events: subscribe, replay from the database, then go live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from workflows.events import branch_group
from workflows.streams import EventCursor, last_seq


def sse_frame(event: dict[str, Any]) -> str:
    data = json.dumps(event["data"], separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"


async def event_stream(*, branch_id: str, last_id: int | None) -> AsyncIterator[str]:
    """Events after `last_id` (or from now when None), then live ones.

    Keep-alive comments, `retry:` and the end at shutdown come from weldr_agent.sse.guarded.
    """
    layer = get_channel_layer()
    channel = await layer.new_channel("sse.")
    group = branch_group(branch_id)
    # Subscribe before reading the database: an event committed in between is seen twice at
    # worst (and dropped by the cursor), never missed.
    await layer.group_add(group, channel)
    try:
        cursor = EventCursor(branch_id, await last_seq(branch_id) if last_id is None else last_id)
        yield ": connected\n\n"
        for event in await cursor.catch_up():
            yield sse_frame(event)
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel),
                                                 timeout=settings.SSE_KEEPALIVE_SECONDS)
            except TimeoutError:
                # Quiet: also look in the database, in case a published message was lost.
                for event in await cursor.catch_up():
                    yield sse_frame(event)
                continue
            for event in await cursor.on_live(message["event"]):
                yield sse_frame(event)
    finally:
        await layer.group_discard(group, channel)
