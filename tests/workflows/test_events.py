"""Event numbering, fan-out across two agent processes (Redis), websocket authentication."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import close_old_connections
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from tests.workflows.conftest import Agent, SSEClient, WSClient, connected, write_script
from weldr_agent.sse import InvalidEventId, last_event_id
from workflows import services
from workflows.events import event_publish
from workflows.models import Event

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(600)]


@pytest.fixture
def agent(shared_agent: Agent) -> Agent:
    """One agent for the module's HTTP and websocket checks (each makes its own project and
    branch); the Redis fan-out test starts its own two on one database."""
    return shared_agent


@pytest.fixture
def scripts(shared_scripts: Path) -> Path:
    return shared_scripts


def test_concurrent_writers_number_events_without_gaps_or_duplicates() -> None:
    # given one branch and eight threads publishing at once
    project = services.project_create(name="p")
    branch = services.branch_create(project=project, name="main", bucket="seq-test")
    errors: list[BaseException] = []

    def publish(worker: int) -> None:
        try:
            for n in range(25):
                event_publish(branch=branch, type="message.delta",
                              data={"worker": worker, "n": n})
        except BaseException as error:
            errors.append(error)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every event has its own number, 1..200, and each writer's events keep their order
    assert errors == []
    rows = list(Event.objects.filter(branch=branch).order_by("seq"))
    assert [row.seq for row in rows] == list(range(1, 201))
    for worker in range(8):
        mine = [row.data["n"] for row in rows if row.data["worker"] == worker]
        assert mine == list(range(25))


def test_two_agent_processes_share_events_through_redis(agent_factory: Callable[[], Agent],
                                                        scripts: Path) -> None:
    # given two agents on one database and one Redis, clients on the second
    first, second = agent_factory(), agent_factory()
    project_id, branch_id = first.project_branch()
    sse = SSEClient(second, project_id, branch_id)
    ws = WSClient(second, project_id, branch_id)
    connected(sse, ws)

    # when the first agent runs a workflow
    model = write_script(scripts, "two", [
        {"text": "plan"},
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "x.txt", "content": "x"}}]},
        {"text": "Wrote x."}])
    run_id = first.trigger(project_id, branch_id, model).json()["run_id"]
    assert first.run_wait(run_id)["status"] == "completed"

    # then the second agent's clients saw all of it live, identically
    seen_sse, seen_ws = sse.wait(), ws.wait()
    assert seen_sse == seen_ws
    assert seen_sse[0]["type"] == "run.queued" and seen_sse[-1]["type"] == "run.completed"
    assert [e["id"] for e in seen_sse] == list(range(1, len(seen_sse) + 1))
    # and the second agent serves the run's result from the shared database
    assert second.http.get(f"/runs/{run_id}").json()["versions"][0]["number"] == 1


def test_websocket_without_credentials_closes_with_4401(agent: Agent) -> None:
    project_id, branch_id = agent.project_branch()
    for token in ("", "wat_not-a-real-token"):
        client = WSClient(agent, project_id, branch_id, token=token)
        client.start()
        assert client.wait() == []
        assert client.close_code == 4401


def test_websocket_token_query_parameter_and_unknown_branch(agent: Agent) -> None:
    project_id, branch_id = agent.project_branch()
    client = WSClient(agent, project_id, "nope", token="")
    client.url += f"?token={agent.token}"
    client.start()
    assert client.wait() == []
    assert client.close_code == 4404


def test_sse_requires_authentication_and_a_known_branch(agent: Agent) -> None:
    import httpx

    project_id, branch_id = agent.project_branch()
    anonymous = httpx.get(f"{agent.url}/events",
                          params={"project_id": project_id, "branch_id": branch_id})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    missing = agent.http.get("/events", params={"project_id": project_id, "branch_id": "nope"})
    assert missing.status_code == 404
    bad = agent.http.get("/events", params={"project_id": project_id, "branch_id": branch_id,
                                            "last_event_id": "x"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_event_id"
    # a digit that int() refuses (isdigit() accepts it) is the client's mistake too, not a 500
    superscript = agent.http.get("/events", params={
        "project_id": project_id, "branch_id": branch_id, "last_event_id": "\u00b2"})
    assert superscript.status_code == 400 and superscript.json()["code"] == "invalid_event_id"


@pytest.mark.parametrize(("header", "query", "strict", "expected"), [
    (None, None, True, None), ("", "", True, None), ("41", "7", True, 41), (None, "7", True, 7),
    ("x", None, False, None), ("\u00b2", None, False, None), ("-1", None, False, None),
])
def test_last_event_id_is_the_header_else_the_query(header: str | None, query: str | None,
                                                     strict: bool, expected: int | None) -> None:
    # given a request as an EventSource (header) or a plain client (query) sends it
    extra = {} if header is None else {"HTTP_LAST_EVENT_ID": header}
    params = {} if query is None else {"last_event_id": query}
    request = Request(APIRequestFactory().get("/events", params, **extra))

    # then the view reads one id, or none; a bad one is ignored only where not strict
    assert last_event_id(request, query="last_event_id", strict=strict) == expected
    if header not in (None, "") and expected is None:
        with pytest.raises(InvalidEventId):
            last_event_id(request, query="last_event_id")


@pytest.mark.parametrize("accept", ["text/event-stream", "*/*", None,
                                    "text/event-stream, application/json;q=0.5"])
def test_sse_accepts_what_a_browser_sends(agent: Agent, accept: str | None) -> None:
    """EventSource sends `Accept: text/event-stream`; curl `*/*`; some clients nothing."""
    import httpx

    project_id, branch_id = agent.project_branch()
    headers = {"Authorization": f"Bearer {agent.token}"}
    if accept is not None:
        headers["Accept"] = accept
    with httpx.stream("GET", f"{agent.url}/events", headers=headers, timeout=10,
                      params={"project_id": project_id, "branch_id": branch_id}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache, no-transform"
        assert next(response.iter_text()).startswith("retry: 1000\n\n")


def test_sse_errors_are_json_even_when_the_stream_was_asked_for(agent: Agent) -> None:
    project_id, _ = agent.project_branch()
    missing = agent.http.get("/events", params={"project_id": project_id, "branch_id": "nope"},
                             headers={"Accept": "text/event-stream"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/json")
    assert missing.json()["code"] == "branch_not_found"
