"""Limits against cheap denial of service on a real agent: open event streams per principal
(SSE and websocket) and background command output spooled to disk, kept across a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.conftest import AgentProcess, running_agent
from tests.exec.helpers import sse_events
from weldr_agent import runner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

OUTPUT_CAP = 16 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """A real agent allowing 2 open streams per principal and keeping 3 finished logs."""
    yield from running_agent(tmp_path_factory.mktemp("agent"), STREAMS_PER_PRINCIPAL="2",
                             EXEC_LOGS_KEEP="3", EXEC_OUTPUT_MAX_BYTES=str(OUTPUT_CAP),
                             SSE_KEEPALIVE_SECONDS="1")


def _start(http: httpx.Client, bucket: str, command: str) -> str:
    response = http.post("/exec", json={"bucket": bucket, "command": command,
                                        "background": True})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _wait_finished(http: httpx.Client, exec_id: str) -> dict:
    found: dict = {}

    def finished() -> bool:
        found.update(http.get(f"/exec/{exec_id}").json())
        return found["status"] != "running"

    assert runner.wait_until(finished, timeout=60, interval=0.1), found
    return found


def _logs(http: httpx.Client, exec_id: str) -> list[tuple[str, dict]]:
    with http.stream("GET", f"/exec/{exec_id}/logs") as response:
        assert response.status_code == 200, response.read()
        return list(sse_events(response))


def _events_stream(stack: ExitStack, agent: AgentProcess, token: str,
                   branch: tuple[str, str]) -> httpx.Response:
    """An open SSE subscription to the branch's events (held until `stack` closes)."""
    client = stack.enter_context(httpx.Client(base_url=agent.url, timeout=30))
    response = stack.enter_context(client.stream(
        "GET", "/events", params={"project_id": branch[0], "branch_id": branch[1]},
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}))
    return response


def _ws_close_code(agent: AgentProcess, token: str, branch: tuple[str, str]) -> int | None:
    url = f"ws://127.0.0.1:{agent.port}/ws/events/{branch[0]}/{branch[1]}?token={token}"
    with ws_connect(url, open_timeout=30) as socket:
        try:
            socket.recv(timeout=2)
        except TimeoutError:
            return None
        except ConnectionClosed:
            return socket.close_code
        return None


def test_open_event_streams_are_limited_per_principal(agent: AgentProcess, token: str,
                                                      http: httpx.Client, bucket: str) -> None:
    # given a branch, and a principal with its 2 streams open
    project = http.post("/projects", json={"name": "limits"}).json()
    made = http.post(f"/projects/{project['id']}/branches",
                     json={"name": "main", "bucket": bucket})
    assert made.status_code == 201, made.text
    branch = (project["id"], made.json()["id"])
    exec_id = _start(http, bucket, "sleep 20")
    with ExitStack() as first:
        opened = [_events_stream(first, agent, token, branch)]
        with ExitStack() as second:
            opened.append(_events_stream(second, agent, token, branch))
            assert [response.status_code for response in opened] == [200, 200]

            # when it opens one more stream of any kind
            refused = http.get("/events", params={"project_id": branch[0],
                                                  "branch_id": branch[1]},
                               headers={"Accept": "text/event-stream"})
            logs = http.get(f"/exec/{exec_id}/logs", headers={"Accept": "text/event-stream"})
            live = http.post("/exec", json={"bucket": bucket, "command": "echo no"},
                             headers={"Accept": "text/event-stream"})

            # then each is refused with 429 too_many_streams, and so is the websocket
            for response in (refused, logs, live):
                assert response.status_code == 429, response.text
                assert response.json()["code"] == "too_many_streams"
                assert "STREAMS_PER_PRINCIPAL" in response.json()["detail"]
            assert _ws_close_code(agent, token, branch) == 4429
            # and another principal is not affected
            other = agent.manage("create_api_token", "--name", "other").stdout.split()[-1]
            assert _ws_close_code(agent, other, branch) is None

        # when a client hangs up, its place is free again
        def accepted() -> bool:
            with ExitStack() as third:
                return _events_stream(third, agent, token, branch).status_code == 200

        assert runner.wait_until(accepted, timeout=10, interval=0.2)
    http.delete(f"/exec/{exec_id}")


def test_only_the_newest_finished_logs_are_kept_on_disk(agent: AgentProcess,
                                                        http: httpx.Client, bucket: str) -> None:
    spool = Path(agent.env["WELDR_ENV_VOL"]) / "exec-logs"
    ids = []
    for n in range(5):
        ids.append(_start(http, bucket, f"echo run-{n}"))
        _wait_finished(http, ids[-1])
        time.sleep(0.05)
    assert runner.wait_until(lambda: len(list(spool.glob("*.jsonl"))) == 3, timeout=10)
    assert sorted(path.stem for path in spool.glob("*.jsonl")) == sorted(ids[-3:])
    assert oct(spool.stat().st_mode & 0o777) == "0o700"


def test_background_output_is_on_disk_and_survives_a_restart(agent: AgentProcess,
                                                             http: httpx.Client,
                                                             bucket: str) -> None:
    # given a finished background command with more output than the cap, and a second one
    # still running when the agent goes down
    exec_id = _start(http, bucket,
                     "head -c 40000 /dev/zero | tr '\\0' a; echo oops >&2; exit 3")
    _wait_finished(http, exec_id)
    running = _start(http, bucket, "echo before; sleep 600")
    assert runner.wait_until(lambda: any(kind == "stdout" for kind, _ in _partial(http, running)),
                             timeout=30)
    before = _logs(http, exec_id)
    spooled = Path(agent.env["WELDR_ENV_VOL"]) / "exec-logs" / f"{exec_id}.jsonl"
    assert [json.loads(line)["kind"] for line in spooled.read_text().splitlines()][-1] == "exit"

    # when the agent restarts
    agent.stop()
    agent.start()

    # then the finished command's logs answer as before: capped stdout, stderr, exit code
    after = _logs(http, exec_id)
    assert after == before
    stdout = "".join(data["data"] for kind, data in after if kind == "stdout")
    assert stdout == "a" * OUTPUT_CAP
    assert [data for kind, data in after if kind == "stderr"] == [{"data": "oops\n"}]
    assert after[-1][0] == "exit" and after[-1][1]["exit_code"] == 3
    # and the one cut by the restart shows its output and then that it died
    cut = _logs(http, running)
    assert ("stdout", {"data": "before\n"}) in cut
    assert cut[-1][0] == "exit"
    assert http.get(f"/exec/{running}").json()["status"] == "killed"


def _partial(http: httpx.Client, exec_id: str, seconds: float = 2) -> list[tuple[str, dict]]:
    """The events of a running command so far: the stream is left after `seconds`."""
    with http.stream("GET", f"/exec/{exec_id}/logs", timeout=seconds) as response:
        return list(sse_events(response, deadline=time.monotonic() + seconds))
