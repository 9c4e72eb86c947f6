"""The one door for workflow events: a numbered row in the database, then the channel layer.

Each branch numbers its events 1, 2, 3… An event's number comes from the branch's counter row,
incremented under its row lock in the same transaction that inserts the event, so two writers
(two threads, two agent processes) never take the same number and never leave a hole.
Publishing happens after commit; a reader that sees a jump in numbers fills it from the database
(see streams.py), so delivery order on the channel layer does not matter.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from weldr_agent.routers import SHARED_DB
from workflows.models import Branch, Event, EventCounter, WorkflowRun

logger = logging.getLogger("weldr.workflows.events")

EVENT_TYPES = (
    "run.queued", "run.started", "step.started", "message.delta", "tool.call", "tool.result",
    "file.changed", "version.created", "run.completed", "run.failed",
    # mounts/snapshots.py (issue #15): a snapshot of the branch's bucket, and a restore of one.
    "snapshot.created", "snapshot.restored",
)


def branch_group(branch_id: str) -> str:
    """The channel layer group of a branch's events (ASCII, under 100 characters)."""
    return f"workflow-events.{branch_id}"


def event_record(*, branch_id: str, type: str, data: dict[str, Any],
                 run: WorkflowRun | None = None) -> Event:
    """Insert the branch's next event; the counter's row lock serializes concurrent writers."""
    with transaction.atomic(using=SHARED_DB):
        updated = EventCounter.objects.filter(branch_id=branch_id).update(
            last_seq=F("last_seq") + 1)
        if not updated:
            # First event of the branch: create the counter, then lock it like everyone else.
            EventCounter.objects.get_or_create(branch_id=branch_id)
            EventCounter.objects.filter(branch_id=branch_id).update(last_seq=F("last_seq") + 1)
        seq = EventCounter.objects.values_list("last_seq", flat=True).get(branch_id=branch_id)
        return Event.objects.create(branch_id=branch_id, seq=seq, type=type, data=data, run=run)


def event_broadcast(event: Event) -> None:
    """Send a committed event to the branch's group (every SSE and websocket client)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "workflow.event", "event": event.as_message()}
    try:
        async_to_sync(layer.group_send)(branch_group(event.branch_id), message)
    except Exception:
        # The row is committed: readers recover it from the database (streams.py).
        logger.exception("publishing event %s/%s failed", event.branch_id, event.seq)


def event_publish(*, branch: Branch | str, type: str, data: dict[str, Any] | None = None,
                  run: WorkflowRun | None = None) -> Event:
    """Record an event and publish it to the branch's clients."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    branch_id = branch if isinstance(branch, str) else branch.id
    event = event_record(branch_id=branch_id, type=type, data=data or {}, run=run)
    event_broadcast(event)
    return event
