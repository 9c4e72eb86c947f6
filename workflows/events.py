"""The one door for workflow events: numbered rows in the database, then every subscriber.

Each branch numbers its events 1, 2, 3… from its counter row, incremented under the row's lock
in the transaction that inserts the events, so two writers (two agent processes) never take the
same number and never leave a hole.

Publishing is off the caller's thread: `event_publish` hands the event to this process's
publisher thread and, unless `wait=False`, waits until it is committed. The publisher
- takes everything queued; when that is only text deltas it waits up to
  WORKFLOW_EVENT_WINDOW_MS for more, and adjacent deltas of one run and step become one
  `message.delta` event (their texts joined, in order): fewer rows, frames and sends, the same
  text; anything else is written at once;
- numbers a branch's events with one `UPDATE … RETURNING` of its counter and inserts them with
  one bulk insert, in one transaction;
- after commit hands them to this process's subscribers (streams.py, no channel layer, no
  database read) and, when the channel layer reaches other processes (Redis), sends them to the
  branch's group once per batch.

A subscriber that sees a jump in numbers (another process's events arrived first, or its
backlog overflowed) fills it from the database (streams.py), so order across processes does
not matter. A caller inside a transaction records its event in that transaction (the old,
synchronous way), and the publisher fans it out after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections, transaction

from weldr_agent.databases import SHARED_DB
from workflows.models import Branch, Event, EventCounter, WorkflowRun
from workflows.streams import PROCESS_ID, branch_group, deliver_local, layer_crosses_processes

logger = logging.getLogger("weldr.workflows.events")

EVENT_TYPES = (
    "run.queued", "run.started", "step.started", "message.delta", "tool.call", "tool.result",
    "file.changed", "version.created", "run.completed", "run.failed",
    # mounts/snapshots.py (issue #15): a snapshot of the branch's bucket, and a restore of one.
    "snapshot.created", "snapshot.restored",
)
# This process, on the channel layer: a process skips its own batches (delivered locally).
# The most events one transaction writes (a burst after a slow commit is split).
BATCH_MAX = 2000
# Idle this long, the publisher closes its database connection (an idle agent holds none; it
# costs a reconnect at the start of the next burst).
IDLE_SECONDS = 1.0


@dataclass
class Pending:
    """An event handed to the publisher, not yet numbered."""

    branch_id: str
    type: str
    data: dict[str, Any]
    run_id: str | None
    queued: float = field(default_factory=time.monotonic)
    done: Future[Event] | None = None

    def joins(self, other: Pending) -> bool:
        """`other` can be appended to this delta: same branch, run and step, nobody waiting."""
        return (self.type == other.type == "message.delta" and self.done is None
                and other.done is None and self.branch_id == other.branch_id
                and self.run_id == other.run_id
                and self.data.keys() == other.data.keys()
                and all(self.data[k] == other.data[k] for k in self.data if k != "text"))


@dataclass
class Committed:
    """Events recorded elsewhere (a caller's transaction), to be fanned out by the publisher."""

    branch_id: str
    messages: list[dict[str, Any]]


def coalesce(items: list[Pending]) -> list[Pending]:
    """Adjacent deltas of one run and step → one delta with their texts joined, in order."""
    merged: list[Pending] = []
    for item in items:
        last = merged[-1] if merged else None
        if last is not None and last.joins(item):
            last.data = {**last.data, "text": last.data["text"] + item.data["text"]}
        else:
            merged.append(Pending(item.branch_id, item.type, dict(item.data), item.run_id,
                                  item.queued, item.done))
    return merged


def seq_reserve(branch_id: str, count: int) -> int:
    """Take `count` numbers of the branch (inside a transaction); returns the last one."""
    table = connections[SHARED_DB].ops.quote_name(EventCounter._meta.db_table)
    sql = f"UPDATE {table} SET last_seq = last_seq + %s WHERE branch_id = %s RETURNING last_seq"
    with connections[SHARED_DB].cursor() as cursor:
        cursor.execute(sql, [count, branch_id])
        row = cursor.fetchone()
        if row is None:
            # First events of the branch: create the counter, then lock it like everyone else.
            EventCounter.objects.get_or_create(branch_id=branch_id)
            cursor.execute(sql, [count, branch_id])
            row = cursor.fetchone()
    return int(row[0])


def events_record(branch_id: str, items: list[Pending]) -> list[Event]:
    """Number and insert a branch's events in one transaction; the counter's lock serializes."""
    with transaction.atomic(using=SHARED_DB):
        last = seq_reserve(branch_id, len(items))
        rows = [Event(branch_id=branch_id, seq=last - len(items) + 1 + n, type=item.type,
                      data=item.data, run_id=item.run_id) for n, item in enumerate(items)]
        return Event.objects.bulk_create(rows)


def _holdable(item: Pending | Committed) -> bool:
    """A text delta nobody waits for may be held for the window; anything else goes now."""
    return isinstance(item, Pending) and item.type == "message.delta" and item.done is None


class Publisher(threading.Thread):
    """This process's event writer: numbers, inserts and fans out batches, in queue order."""

    def __init__(self) -> None:
        super().__init__(name="workflow-events", daemon=True)
        self.queue: queue.SimpleQueue[Pending | Committed] = queue.SimpleQueue()
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self) -> None:
        # Its own event loop, kept: the channel layer's connections are per loop.
        self.loop = asyncio.new_event_loop()
        while True:
            batch = self._take()
            try:
                self._write(batch)
            except Exception:  # never die: the next batch may succeed
                logger.exception("publishing %d event(s) failed", len(batch))
                connections[SHARED_DB].close_if_unusable_or_obsolete()

    def _take(self) -> list[Pending | Committed]:
        """The next batch: whatever is queued, plus, while it is only deltas, what comes
        within the window after the first of them."""
        try:
            batch = [self.queue.get(timeout=IDLE_SECONDS)]
        except queue.Empty:
            connections[SHARED_DB].close()
            batch = [self.queue.get()]
        window = settings.WORKFLOW_EVENT_WINDOW_MS / 1000
        deadline = getattr(batch[0], "queued", 0.0) + window
        deltas_only = _holdable(batch[0])
        while len(batch) < BATCH_MAX:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                wait = deadline - time.monotonic()
                if wait <= 0 or not deltas_only:
                    break
                try:
                    item = self.queue.get(timeout=wait)
                except queue.Empty:
                    break
            batch.append(item)
            deltas_only = deltas_only and _holdable(item)
        return batch

    def _write(self, batch: list[Pending | Committed]) -> None:
        # Per branch, in queue order; a branch's events are one transaction.
        branches: dict[str, list[Pending | Committed]] = {}
        for item in batch:
            branches.setdefault(item.branch_id, []).append(item)
        for branch_id, items in branches.items():
            pending = coalesce([i for i in items if isinstance(i, Pending)])
            messages = [m for i in items if isinstance(i, Committed) for m in i.messages]
            if pending:
                try:
                    rows = events_record(branch_id, pending)
                except Exception as error:
                    for item in pending:
                        if item.done is not None:
                            item.done.set_exception(error)
                    raise
                for item, row in zip(pending, rows, strict=True):
                    if item.done is not None:
                        item.done.set_result(row)
                messages.extend(row.as_message() for row in rows)
            if messages:
                self._fan_out(branch_id, sorted(messages, key=lambda m: m["id"]))

    def _fan_out(self, branch_id: str, messages: list[dict[str, Any]]) -> None:
        deliver_local(branch_id, messages)
        if not layer_crosses_processes():
            return
        assert self.loop is not None
        message = {"type": "workflow.events", "origin": PROCESS_ID, "events": messages}
        try:
            self.loop.run_until_complete(
                get_channel_layer().group_send(branch_group(branch_id), message))
        except Exception:
            # The rows are committed: other processes' readers recover them from the database.
            logger.exception("sending events of %s to the channel layer failed", branch_id)


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher
    with _publisher_lock:
        if _publisher is None or not _publisher.is_alive():
            _publisher = Publisher()
            _publisher.start()
        return _publisher


def event_publish(*, branch: Branch | str, type: str, data: dict[str, Any] | None = None,
                  run: WorkflowRun | None = None, wait: bool = True) -> Event | None:
    """Record an event and publish it to the branch's clients.

    With `wait` (the default) returns the committed event; without, returns None at once (text
    deltas: the run's thread does not wait for the database).
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    branch_id = branch if isinstance(branch, str) else branch.id
    data = data or {}
    if connections[SHARED_DB].in_atomic_block:
        # Numbered in the caller's transaction, so it commits (or not) with it.
        row = events_record(branch_id, [Pending(branch_id, type, data, run and run.id)])[0]
        transaction.on_commit(
            lambda: publisher().queue.put(Committed(branch_id, [row.as_message()])),
            using=SHARED_DB)
        return row
    done: Future[Event] | None = Future() if wait else None
    publisher().queue.put(Pending(branch_id, type, data, run and run.id, done=done))
    return done.result(timeout=60) if done is not None else None

