"""Gap-free, duplicate-free event delivery to one client (shared by SSE and websockets).

Order of operations for a client: subscribe to the branch's group first, then replay from the
database everything after the client's last id, then forward live events. A live event whose
number is not the next one expected means something is missing (published out of order by two
writers, or dropped by a full channel): the missing range is read from the database. Anything at
or below the cursor was already sent and is dropped.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from workflows.models import Event

REPLAY_BATCH = 500


@database_sync_to_async
def events_after(branch_id: str, seq: int, limit: int = REPLAY_BATCH) -> list[dict[str, Any]]:
    rows = Event.objects.filter(branch_id=branch_id, seq__gt=seq).order_by("seq")[:limit]
    return [row.as_message() for row in rows]


@database_sync_to_async
def last_seq(branch_id: str) -> int:
    row = Event.objects.filter(branch_id=branch_id).order_by("-seq").values_list("seq").first()
    return row[0] if row else 0


class EventCursor:
    """Remembers the last event a client got and decides what it gets next."""

    def __init__(self, branch_id: str, last_id: int) -> None:
        self.branch_id = branch_id
        self.last_id = last_id

    async def catch_up(self) -> list[dict[str, Any]]:
        """Everything in the database after the cursor, in order."""
        sent: list[dict[str, Any]] = []
        while True:
            batch = await events_after(self.branch_id, self.last_id)
            if not batch:
                return sent
            self.last_id = batch[-1]["id"]
            sent.extend(batch)
            if len(batch) < REPLAY_BATCH:
                return sent

    async def on_live(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The events to send for one live event: none, itself, or the gap up to it."""
        seq = event["id"]
        if seq <= self.last_id:
            return []
        if seq == self.last_id + 1:
            self.last_id = seq
            return [event]
        return await self.catch_up()
