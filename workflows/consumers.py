"""WS /ws/events/{project_id}/{branch_id}: the branch's events as {"id", "type", "data"}.

The client resumes with `?last_event_id=N` on connect or by sending {"last_event_id": N}.
Authentication happens in weldr_agent.ws_auth; without a principal the socket closes with 4401,
a cookie-authenticated socket from a foreign Origin with 4403, and one more than
STREAMS_PER_PRINCIPAL open streams with 4429 (weldr_agent.limits). At agent shutdown the socket
closes with 4012 (restarting, what 1012 says, which a server may not send), and when reading
the events fails (the database refused a connection) with 1011: reconnect with the last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from weldr_agent import access, limits
from weldr_agent.sse import stream_closed, stream_opened
from workflows.models import Branch
from workflows.streams import EventCursor, LiveEvent, last_seq, subscribed

logger = logging.getLogger("weldr.workflows.consumers")

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_INTERNAL_ERROR = 1011
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
    """Live events come from this process's fan-out (streams.subscribed), not from the
    consumer's own channel: one task per socket forwards them."""

    # No channel of its own: nothing is sent to it. With channels-redis every consumer's
    # channel is one more receiver woken for each message the process gets (an alias that is
    # not configured gives no layer).
    channel_layer_alias = "workflows-events-none"
    cursor: EventCursor | None = None
    slot: limits.StreamSlot | None = None
    forwarder: asyncio.Task[None] | None = None

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
        # Subscribe and fix the cursor before accepting: once the client sees the socket open,
        # every later event reaches it.
        # The lock keeps the cursor's decisions and their sends one at a time (replay, resume,
        # live), so nothing is sent twice or out of order.
        self.sending = asyncio.Lock()
        async with self.sending:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.forwarder = asyncio.ensure_future(self._forward(kwargs["branch_id"], ready))
            await ready
            await self.accept()
            stream_opened(self, self._close_at_shutdown)
            await self._send_all(await self.cursor.catch_up())  # type: ignore[union-attr]

    async def _forward(self, branch_id: str, ready: asyncio.Future[None]) -> None:
        """Hold the subscription and send what it brings, until the socket closes."""
        try:
            async with subscribed(branch_id) as subscription:
                last_id = _query_last_id(self.scope)
                self.cursor = EventCursor(
                    branch_id, await last_seq(branch_id) if last_id is None else last_id)
                ready.set_result(None)
                while True:
                    # Quiet for a keep-alive interval: the database is also read, in case a
                    # published batch was lost. Waiting does not hold the lock.
                    live = await subscription.receive(settings.SSE_KEEPALIVE_SECONDS)
                    async with self.sending:
                        await self._send_all(await subscription.resolve(self.cursor, live))
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
                return
            # A failed read (the database refused a connection…): the socket closes, and the
            # client reconnects with its last id instead of waiting on a dead stream.
            logger.exception("event websocket of %s failed", branch_id)
            await self.close(code=CLOSE_INTERNAL_ERROR)
        except BaseException:
            if not ready.done():
                ready.cancel()
            raise

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.cursor is None or not isinstance(content, dict):
            return
        last_id = content.get("last_event_id")
        if isinstance(last_id, int) and last_id >= 0:
            async with self.sending:
                self.cursor.last_id = last_id
                await self._send_all(await self.cursor.catch_up())
        else:
            await self.send_json({"error": "send {\"last_event_id\": <integer>} to resume"})

    def _close_at_shutdown(self) -> None:
        stream_closed(self)
        asyncio.ensure_future(self.close(code=CLOSE_RESTARTING))

    async def disconnect(self, code: int) -> None:
        stream_closed(self)
        if self.slot is not None:
            self.slot.release()
        if self.forwarder is not None:
            self.forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.forwarder

    async def _send_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if isinstance(event, LiveEvent):
                await self.send(text_data=event.json)
            else:
                await self.send_json(event)
