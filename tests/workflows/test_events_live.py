"""Fast publishing keeps the contract: coalesced deltas lose no text and no order; every
subscriber (live from the start, late with a replay, resuming mid-run, in another agent
process) gets every event exactly once, in order, the same as the database holds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from tests.workflows.conftest import Agent, SSEClient, WSClient, connected, write_script
from workflows import services
from workflows.events import event_publish
from workflows.models import Event

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(600)]


def history(agent: Agent, project_id: str, branch_id: str) -> list[dict[str, Any]]:
    """The branch's whole history, as a client replaying from the start gets it."""
    client = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(client)
    return client.wait()


def joined_text(events: list[dict[str, Any]], step: str = "planning") -> str:
    return "".join(e["data"]["text"] for e in events
                   if e["type"] == "message.delta" and e["data"]["step"] == step)


def test_coalesced_deltas_keep_every_text_in_order_and_stop_at_other_events() -> None:
    # given a branch and a burst of deltas with a tool call in the middle, nobody waiting
    project = services.project_create(name="p")
    branch = services.branch_create(project=project, name="main", bucket="coalesce-test")
    texts = [f"<{n}>" for n in range(300)]
    for n, text in enumerate(texts):
        event_publish(branch=branch, type="message.delta", data={"step": "coding", "text": text},
                      wait=False)
        if n == 149:
            event_publish(branch=branch, type="tool.call", data={"name": "x"}, wait=False)

    # when the last event is published and waited for
    event_publish(branch=branch, type="run.completed", data={})

    # then the deltas became fewer events, numbered 1..N without a hole, their text whole and
    # in order, and none joined across the tool call
    rows = list(Event.objects.filter(branch=branch).order_by("seq"))
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    deltas = [row for row in rows if row.type == "message.delta"]
    assert len(deltas) < len(texts)
    assert "".join(row.data["text"] for row in deltas) == "".join(texts)
    kinds = [row.type for row in rows]
    call = kinds.index("tool.call")
    assert "".join(row.data["text"] for row in rows[:call]) == "".join(texts[:150])
    assert kinds[-1] == "run.completed"


# embedded: what `make run` uses, SQLite and the in-memory layer; memory: PostgreSQL and the
# in-memory layer; redis: PostgreSQL and channels-redis.
SETUPS = {"embedded": {"DATABASE_URL": "", "REDIS_URL": ""}, "memory": {"REDIS_URL": ""},
          "redis": {}}


@pytest.mark.parametrize("layer", list(SETUPS))
def test_live_late_and_resuming_subscribers_get_every_event_once_in_order(
        agent_factory: Callable[..., Agent], scripts: Path, layer: str) -> None:
    # given an agent (SQLite or PostgreSQL; in-memory layer or Redis) and live subscribers of
    # both kinds
    agent = agent_factory(**SETUPS[layer])
    project_id, branch_id = agent.project_branch()
    live = [SSEClient(agent, project_id, branch_id), WSClient(agent, project_id, branch_id)]
    connected(*live)

    # when a run streams 1,500 deltas at 1,000/s, and mid-run a late SSE subscriber replays
    # from the start, a late websocket resumes from 0 (?last_event_id=0), and an SSE client
    # that stopped after 40 events comes back with its Last-Event-ID
    model = write_script(scripts, f"live{layer}", [
        {"stream": {"count": 1500, "rate": 1000}}, {"text": "All done, nothing to change."}])
    first = SSEClient(agent, project_id, branch_id, stop_after=40)
    connected(first)
    run_id = agent.trigger(project_id, branch_id, model).json()["run_id"]
    early = first.wait()
    time.sleep(0.5)
    late = [SSEClient(agent, project_id, branch_id, last_event_id=0),
            WSClient(agent, project_id, branch_id),
            SSEClient(agent, project_id, branch_id, last_event_id=early[-1]["id"])]
    late[1].url += "?last_event_id=0"
    connected(*late)
    assert agent.run_wait(run_id)["status"] == "completed"

    # then everyone got the database's sequence: exactly once, in order, nothing missing
    expected = history(agent, project_id, branch_id)
    assert [e["id"] for e in expected] == list(range(1, len(expected) + 1))
    assert expected[-1]["type"] == "run.completed"
    stamps = joined_text(expected)
    assert len(stamps) > 1500 * 10  # every delta's text is there (repr of a float each)
    for client in [*live, late[0], late[1]]:
        assert client.wait() == expected
    assert early + late[2].wait() == expected


def test_events_reach_another_process_without_waiting_for_the_keepalive(
        agent_factory: Callable[..., Agent], scripts: Path) -> None:
    """Another process's events come over the channel layer at once, not by the database
    poll that runs when a stream has been quiet for SSE_KEEPALIVE_SECONDS."""
    # given two agents on one Redis, subscribers on the second that poll only every 60 s
    first = agent_factory()
    second = agent_factory(SSE_KEEPALIVE_SECONDS="60")
    project_id, branch_id = first.project_branch()
    clients = [SSEClient(second, project_id, branch_id), WSClient(second, project_id, branch_id)]
    connected(*clients)

    # when the first agent runs a workflow that streams 500 deltas
    model = write_script(scripts, "remote", [
        {"stream": {"count": 500, "rate": 500}}, {"text": "Done."}])
    run_id = first.trigger(project_id, branch_id, model).json()["run_id"]
    assert first.run_wait(run_id)["status"] == "completed"

    # then the second agent's subscribers have all of it within seconds, once and in order
    expected = history(first, project_id, branch_id)
    for client in clients:
        assert client.wait(timeout=10) == expected


def test_a_subscriber_that_overflows_or_misses_a_batch_still_gets_everything(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow client's backlog drops batches, and a batch can be lost (another process's
    message, expired in Redis): the database fills both in, once and in order."""
    from workflows import streams
    from workflows.events import Pending, events_record

    project = services.project_create(name="p")
    branch = services.branch_create(project=project, name="main", bucket="overflow-test")
    monkeypatch.setattr(streams, "BACKLOG", 3)

    async def follow() -> list[int]:
        async with streams.subscribed(branch.id) as subscription:
            cursor = streams.EventCursor(branch.id, 0)
            # given a subscriber that reads nothing while 20 events are published one by one
            for n in range(20):
                await asyncio.to_thread(event_publish, branch=branch, type="tool.call",
                                        data={"n": n})
            record = _closing(events_record)
            await asyncio.sleep(0.2)
            assert subscription.overflowed
            # and an event committed without being published (a lost batch)
            await asyncio.to_thread(record, branch.id,
                                    [Pending(branch.id, "tool.result", {}, None)])
            # when it reads until it is quiet
            got: list[int] = []
            while True:
                live = await subscription.receive(0.5)
                got += [event["id"] for event in await subscription.resolve(cursor, live)]
                if live is None:
                    return got

    # then it got 1..21, each once, in order
    try:
        assert asyncio.run(follow()) == list(range(1, 22))
    finally:
        # The test database is dropped at the end: leave no connection open in other threads.
        _close_pool_connections()
        time.sleep(1.5)  # the publisher closes its own after a second of quiet


def _closing(function: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        try:
            return function(*args)
        finally:
            connections.close_all()

    return run


def _close_pool_connections() -> None:
    """Close the connection of every thread of weldr_agent.asyncdb's pool (one task each)."""
    from weldr_agent import asyncdb

    count = len(asyncdb._executor._threads)
    barrier = threading.Barrier(count)

    def close() -> None:
        barrier.wait(10)
        connections.close_all()

    for future in [asyncdb._executor.submit(close) for _ in range(count)]:
        future.result()
