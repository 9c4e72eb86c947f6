"""Background commands: 202 at once, status, followed logs, kill, and the concurrency limit."""

from __future__ import annotations

import httpx
import pytest

from tests.exec.helpers import processes_with, sse_events
from weldr_agent import runner

pytestmark = pytest.mark.slow


def start(http: httpx.Client, bucket: str, command: str, **extra) -> str:  # type: ignore[no-untyped-def]
    response = http.post("/exec", json={"bucket": bucket, "command": command,
                                        "background": True, **extra})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"
    return response.json()["id"]


def test_background_command_runs_after_the_request(http: httpx.Client, bucket: str) -> None:
    exec_id = start(http, bucket, "echo one; sleep 0.5; echo two >&2; exit 4")

    with http.stream("GET", f"/exec/{exec_id}/logs") as response:
        events = list(sse_events(response))

    assert [kind for kind, _ in events] == ["start", "stdout", "stderr", "exit"]
    assert events[1][1] == {"data": "one\n"} and events[2][1] == {"data": "two\n"}
    assert events[-1][1]["exit_code"] == 4
    status = http.get(f"/exec/{exec_id}").json()
    assert status["id"] == exec_id
    assert (status["status"], status["exit_code"]) == ("exited", 4)


def test_logs_follow_from_the_last_event_id(http: httpx.Client, bucket: str) -> None:
    exec_id = start(http, bucket, "echo one; echo two")
    with http.stream("GET", f"/exec/{exec_id}/logs") as response:
        first = list(sse_events(response))

    with http.stream("GET", f"/exec/{exec_id}/logs",
                     headers={"Last-Event-ID": "1"}) as response:
        resumed = list(sse_events(response))

    assert resumed == first[2:]
    # and an id that is not a non-negative integer is taken as absent: the whole log again
    for bad in ("-5", "x", "1.5"):
        with http.stream("GET", f"/exec/{exec_id}/logs",
                         headers={"Last-Event-ID": bad}) as response:
            assert list(sse_events(response)) == first, bad


def test_delete_kills_the_whole_tree(http: httpx.Client, bucket: str) -> None:
    exec_id = start(http, bucket, "setsid sleep 34.41 & exec sleep 34.42", timeout=600)
    assert runner.wait_until(lambda: len(processes_with("sleep 34.4")) == 2, timeout=10)

    response = http.delete(f"/exec/{exec_id}")

    assert response.status_code == 204
    assert http.get(f"/exec/{exec_id}").json()["status"] == "killed"
    assert runner.wait_until(lambda: not processes_with("sleep 34.4"), timeout=10)


def test_background_timeout_is_recorded(http: httpx.Client, bucket: str) -> None:
    exec_id = start(http, bucket, "sleep 35.5", timeout=0.5)
    with http.stream("GET", f"/exec/{exec_id}/logs") as response:
        events = list(sse_events(response))

    assert events[-1][1]["timed_out"] is True
    assert http.get(f"/exec/{exec_id}").json()["status"] == "timed_out"


def test_concurrency_limit_is_429(http: httpx.Client, bucket: str) -> None:
    # EXEC_MAX_CONCURRENT is 3 for this agent.
    ids = [start(http, bucket, "sleep 36.6", timeout=600) for _ in range(3)]
    try:
        response = http.post("/exec", json={"bucket": bucket, "command": "true"})

        assert response.status_code == 429
        assert response.json()["code"] == "too_many_commands"
    finally:
        for exec_id in ids:
            assert http.delete(f"/exec/{exec_id}").status_code == 204
    assert run_ok(http, bucket)


def run_ok(http: httpx.Client, bucket: str) -> bool:
    return http.post("/exec", json={"bucket": bucket, "command": "true"}).status_code == 200


def test_unknown_id_is_404(http: httpx.Client) -> None:
    for method, path in (("GET", "/exec/exec_nope"), ("DELETE", "/exec/exec_nope"),
                         ("GET", "/exec/exec_nope/logs")):
        response = http.request(method, path)
        assert response.status_code == 404
        assert response.json()["code"] == "no_exec"
