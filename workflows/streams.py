"""Gap-free, duplicate-free event delivery to one client (shared by SSE and websockets).

Fan-out: the publisher thread (events.py) hands each committed batch of a branch to this
process's subscribers directly (`deliver_local`): no channel layer, no database read. Events
published by other agent processes arrive through the channel layer: the first subscriber of a
branch in this process joins the branch's group with one channel (`_Feed`), the last one leaves
it, and what arrives is delivered locally like the rest. An idle subscriber holds no database
connection: its few reads (where to start, the replay) run on the shared pool of
weldr_agent.asyncdb.

Order of operations for a client: subscribe first, then replay from the database everything
after the client's last id, then forward live events. A live event whose number is not the next
one expected means something is missing (another process's events came first, or the
subscriber's backlog overflowed): the missing range is read from the database. Anything at or
below the cursor was already sent and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from weldr_agent.asyncdb import db_sync_to_async
from workflows.models import Event

logger = logging.getLogger("weldr.workflows.streams")
# Tells this process's own batches apart on the channel layer (they were delivered locally).
PROCESS_ID = secrets.token_hex(8)


def branch_group(branch_id: str) -> str:
    """The channel layer group of a branch's events (ASCII, under 100 characters)."""
    return f"workflow-events.{branch_id}"


def layer_crosses_processes() -> bool:
    """True when the channel layer reaches other agent processes (Redis), not only this one."""
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)



REPLAY_BATCH = 500
# Batches a subscriber may have waiting; past that it drops them and reads the database.
BACKLOG = 1000


@db_sync_to_async
def events_after(branch_id: str, seq: int, limit: int = REPLAY_BATCH) -> list[dict[str, Any]]:
    rows = Event.objects.filter(branch_id=branch_id, seq__gt=seq).order_by("seq")[:limit]
    return [row.as_message() for row in rows]


@db_sync_to_async
def last_seq(branch_id: str) -> int:
    row = Event.objects.filter(branch_id=branch_id).order_by("-seq").values_list("seq").first()
    return row[0] if row else 0


class LiveEvent(dict):
    """A live event with its SSE frame and websocket JSON made once, off the event loop, for
    every subscriber (a plain dict from the database is encoded by whoever sends it)."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event)
        data = json.dumps(event["data"], separators=(",", ":"))
        self.sse = f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"
        self.json = json.dumps(event)


class Subscription:
    """One client's inbox of live batches, filled on its event loop."""

    def __init__(self, branch_id: str) -> None:
        self.branch_id = branch_id
        self.loop = asyncio.get_running_loop()
        self.inbox: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue(maxsize=BACKLOG)
        self.overflowed = False

    def offer(self, events: list[dict[str, Any]]) -> None:
        try:
            self.inbox.put_nowait(events)
        except asyncio.QueueFull:
            self.overflowed = True  # dropped: the client reads the database instead

    async def receive(self, quiet: float) -> list[dict[str, Any]] | None:
        """The live events waiting (at least one batch), or None after `quiet` seconds."""
        try:
            async with asyncio.timeout(quiet):
                live = list(await self.inbox.get())
        except TimeoutError:
            return None
        while not self.inbox.empty():
            live.extend(self.inbox.get_nowait())
        return live

    async def resolve(self, cursor: EventCursor,
                      live: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """What the client gets for what `receive` brought: the live events through the cursor;
        after an overflow, or when it was quiet, whatever the database has after the cursor
        (a dropped batch, another process's lost message)."""
        if live is None:
            return await cursor.catch_up()
        events = await cursor.on_live(live)
        if self.overflowed:
            self.overflowed = False
            events.extend(await cursor.catch_up())
        return events


_lock = threading.Lock()
_subscribers: dict[str, set[Subscription]] = {}
_feeds: dict[str, _Feed] = {}


def deliver_local(branch_id: str, events: list[dict[str, Any]]) -> None:
    """Hand a batch to every subscriber of the branch in this process (from any thread)."""
    with _lock:
        subscribers = list(_subscribers.get(branch_id, ()))
    if not subscribers:
        return
    events = [LiveEvent(event) for event in events]
    loops: dict[asyncio.AbstractEventLoop, list[Subscription]] = {}
    for subscriber in subscribers:
        loops.setdefault(subscriber.loop, []).append(subscriber)
    for loop, group in loops.items():
        with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
            loop.call_soon_threadsafe(_offer_all, group, events)


def _offer_all(subscribers: list[Subscription], events: list[dict[str, Any]]) -> None:
    for subscriber in subscribers:
        subscriber.offer(events)


class _Feed:
    """This process's one channel in a branch's group: other processes' events."""

    def __init__(self, branch_id: str) -> None:
        self.branch_id = branch_id
        self.users = 0
        self.ready = asyncio.ensure_future(self._join())
        self.reader: asyncio.Task[None] | None = None
        self.channel = ""

    async def _join(self) -> None:
        layer = get_channel_layer()
        # The default prefix: channels-redis reads all of a process's channels with one
        # blocking pop on one key, and a channel of another prefix would never be read while a
        # consumer holds that pop.
        self.channel = await layer.new_channel()
        await layer.group_add(branch_group(self.branch_id), self.channel)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken connection: subscribers fall back on the database
                logger.exception("reading events of %s from the channel layer", self.branch_id)
                await asyncio.sleep(1)
                continue
            if message.get("origin") != PROCESS_ID and message.get("events"):
                deliver_local(self.branch_id, message["events"])

    async def close(self) -> None:
        self.ready.cancel()
        if self.reader is not None:
            self.reader.cancel()
        if self.channel:
            with contextlib.suppress(Exception):
                await get_channel_layer().group_discard(branch_group(self.branch_id),
                                                        self.channel)


@contextlib.asynccontextmanager
async def subscribed(branch_id: str) -> AsyncIterator[Subscription]:
    """Live events of a branch for as long as the block runs; joined before it starts."""
    subscription = Subscription(branch_id)
    feed = None
    if layer_crosses_processes():
        feed = _feeds.get(branch_id)
        if feed is None:
            feed = _feeds[branch_id] = _Feed(branch_id)
        feed.users += 1
    with _lock:
        _subscribers.setdefault(branch_id, set()).add(subscription)
    try:
        if feed is not None:
            await asyncio.shield(feed.ready)
        yield subscription
    finally:
        with _lock:
            group = _subscribers.get(branch_id, set())
            group.discard(subscription)
            if not group:
                _subscribers.pop(branch_id, None)
        if feed is not None:
            feed.users -= 1
            if feed.users == 0 and _feeds.get(branch_id) is feed:
                del _feeds[branch_id]
                await feed.close()


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

    async def on_live(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The events to send for live ones: the new ones in order, a gap filled from the
        database, nothing already sent."""
        sent: list[dict[str, Any]] = []
        for event in events:
            seq = event["id"]
            if seq <= self.last_id:
                continue
            if seq == self.last_id + 1:
                self.last_id = seq
                sent.append(event)
            else:
                sent.extend(await self.catch_up())
        return sent
