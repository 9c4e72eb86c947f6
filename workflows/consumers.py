"""WS /ws/events/{project_id}/{branch_id}: the branch's events as {"id", "type", "data"}.

The client resumes with `?last_event_id=N` on connect or by sending {"last_event_id": N}.
Authentication happens in weldr_agent.ws_auth; without a principal the socket closes with 4401,
a cookie-authenticated socket from a foreign Origin with 4403, and one more than
STREAMS_PER_PRINCIPAL open streams with 4429 (weldr_agent.limits). At agent shutdown the socket
closes with 4012 (restarting, what 1012 says, which a server may not send): reconnect with the
last id.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from weldr_agent import access, limits
from weldr_agent.sse import stream_closed, stream_opened
from workflows.events import branch_group
from workflows.models import Branch
from workflows.streams import EventCursor, last_seq

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
# 1012 (service restart) is what this means, but servers may only send 1000 or 3000-4999.
CLOSE_RESTARTING = 4012


@database_sync_to_async
def _branch_allowed(principal: Any, project_id: str, branch_id: str) -> int | None:
    """None when the principal may read this branch, else the close code: the same 4404 for a
    project it may not touch as for a missing one (weldr_agent.access: existence does not leak).
    Reading events is safe: a read-only token may subscribe."""
    if not access.project_allowed(principal, project_id) or not Branch.objects.filter(
            id=branch_id, project_id=project_id).exists():
        return CLOSE_NOT_FOUND
    return None


def _query_last_id(scope: dict[str, Any]) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode()).get("last_event_id")
    return int(values[0]) if values and values[0].isdigit() else None


class EventConsumer(AsyncJsonWebsocketConsumer):
    cursor: EventCursor | None = None
    group: str | None = None
    slot: limits.StreamSlot | None = None

    async def connect(self) -> None:
        principal = self.scope.get("principal")
        kwargs = self.scope["url_route"]["kwargs"]
        refused = self.scope.get("refused", CLOSE_UNAUTHENTICATED) if principal is None else \
            await _branch_allowed(principal, kwargs["project_id"], kwargs["branch_id"])
        if refused is None:
            try:
                self.slot = limits.stream_slot_take(principal=principal)
            except limits.TooManyStreams:
                refused = limits.CLOSE_TOO_MANY_STREAMS
        if refused is not None:
            # A close code can only be sent on an open socket: accept, then close.
            await self.accept()
            await self.close(code=refused)
            return
        branch_id = kwargs["branch_id"]
        self.group = branch_group(branch_id)
        # Join the group and fix the cursor before accepting: once the client sees the socket
        # open, every later event reaches it.
        await self.channel_layer.group_add(self.group, self.channel_name)
        last_id = _query_last_id(self.scope)
        self.cursor = EventCursor(branch_id,
                                  await last_seq(branch_id) if last_id is None else last_id)
        await self.accept()
        stream_opened(self, self._close_at_shutdown)
        await self._send_all(await self.cursor.catch_up())

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.cursor is None or not isinstance(content, dict):
            return
        last_id = content.get("last_event_id")
        if isinstance(last_id, int) and last_id >= 0:
            self.cursor.last_id = last_id
            await self._send_all(await self.cursor.catch_up())
        else:
            await self.send_json({"error": "send {\"last_event_id\": <integer>} to resume"})

    async def workflow_event(self, message: dict[str, Any]) -> None:
        if self.cursor is not None:
            await self._send_all(await self.cursor.on_live(message["event"]))

    def _close_at_shutdown(self) -> None:
        stream_closed(self)
        asyncio.ensure_future(self.close(code=CLOSE_RESTARTING))

    async def disconnect(self, code: int) -> None:
        stream_closed(self)
        if self.slot is not None:
            self.slot.release()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _send_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self.send_json(event)
