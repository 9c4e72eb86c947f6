"""A real browser follows the agent's streams across a network cut and an agent restart.

Headless Chromium loads a page from another loopback origin (allowed by CORS_ORIGIN), signed
in by Better Auth's session cookie only: `new EventSource(url, {withCredentials: true})` and a
`WebSocket`, both through a proxy whose connections the test cuts mid-stream. The page must end
with exactly the server's sequence: every id once, in order, nothing missing.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest

from tests.browser.chromium import Chromium
from tests.browser.conftest import Site
from tests.workflows.conftest import write_script
from weldr_agent import runner
from workflows.events import EVENT_TYPES

pytestmark = pytest.mark.timeout(600)

TICKER_JS = """let n = 0;
setInterval(() => console.log(`tick ${n++} ✓ ünïcödé`), 50);
require("http").createServer((q, s) => s.end("ok"))
  .listen(Number(process.env.PORT), process.env.HOST);
"""


def server_sequence(site: Site, path: str, *, until_quiet: bool = False,
                    headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The stream as the server sends it from the start: (id, type, data) of every event,
    read until the stream ends (or, with `until_quiet`, until its first keep-alive)."""
    events: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    # As in a browser, an event without an id field keeps the last id seen.
    last_id = headers.get("Last-Event-ID", "") if headers else ""
    with site.http.stream("GET", path, headers={"Accept": "text/event-stream", **(headers or {})},
                          timeout=httpx.Timeout(60)) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line == ": keep-alive" and until_quiet and events:
                break
            name, _, value = line.partition(": ")
            if name == "id":
                last_id = value
            elif name in ("event", "data"):
                frame[name] = value
            elif line == "" and "data" in frame:
                events.append({"id": last_id, "type": frame["event"],
                               "data": json.loads(frame["data"])})
                frame = {}
    return events


def page_state(browser: Chromium) -> dict[str, Any]:
    return browser.evaluate("JSON.parse(JSON.stringify(state))")


def test_events_follow_a_run_across_a_network_cut_and_an_agent_restart(
        site: Site, browser: Chromium) -> None:
    # given: a branch of the signed-in user, and a page following it both ways
    http = site.http
    project = http.post("/projects", json={"name": "browser"}).json()
    branch = http.post(f"/projects/{project['id']}/branches",
                       json={"name": "main", "bucket": f"br-{secrets.token_hex(4)}"})
    assert branch.status_code == 201, branch.text
    ids = f"project_id={project['id']}&branch_id={branch.json()['id']}"
    gate = site.scripts / "gate"  # type: ignore[attr-defined]
    model = write_script(site.scripts, "cut", [  # type: ignore[attr-defined]
        {"text": "Plan ✓ ünïcödé"},
        {"text": "Writing", "tool_calls": [{"name": "write_file",
                                            "arguments": {"path": "a.txt", "content": "a\n"}}]},
        {"wait_for": str(gate), "stream": {"count": 100, "rate": 100}, "text": "done"}])
    browser.evaluate(
        f"followSSE({json.dumps(f'{site.proxy.url}/events?{ids}&last_event_id=0')}, "
        f"{json.dumps(list(EVENT_TYPES))}, null); "
        f"followWS('ws://127.0.0.1:{site.proxy.port}/ws/events/{project['id']}/"
        f"{branch.json()['id']}')")
    browser.wait_for("state.sseOpens === 1 && state.wsOpens === 1")

    # when: a run starts, and the network drops while it waits mid-run
    run = trigger(http, project["id"], branch.json()["id"], model)
    browser.wait_for("['sse', 'ws'].every(k => state[k].some(e => e.type === 'tool.result'))")
    site.proxy.cut()
    gate.touch()  # the run goes on while the page is cut off
    run_wait(http, run)
    # then: both reconnect by themselves and catch up to the end of the run
    finished = "['sse', 'ws'].every(k => state[k].filter(e => e.type === 'run.completed')" \
               ".length === {})"
    browser.wait_for(finished.format(1))

    # when: the agent restarts (SIGTERM, then a new process on the same port) and runs again
    assert site.agent.stop() == 0
    site.agent.start(timeout=120)
    second = write_script(site.scripts, "again", [{"text": "second run"}])  # type: ignore[attr-defined]
    run_wait(http, trigger(http, project["id"], branch.json()["id"], second))
    browser.wait_for(finished.format(2))

    # then: the page holds exactly the server's sequence on both transports
    expected = server_sequence(site, f"/events?{ids}&last_event_id=0", until_quiet=True)
    assert [e["type"] for e in expected].count("run.completed") == 2
    assert [int(e["id"]) for e in expected] == list(range(1, len(expected) + 1))
    state = page_state(browser)
    got_sse = [{**e, "id": int(e["id"])} for e in state["sse"]]
    want = [{**e, "id": int(e["id"])} for e in expected]
    assert got_sse == want
    assert state["ws"] == want
    # reconnected after the cut and after the restart (the streams ended cleanly: 4012,
    # "restarting", on the websocket; the EventSource came back on its own)
    assert state["sseOpens"] >= 3 and state["wsOpens"] >= 3, state
    assert 4012 in state["wsCloses"], state["wsCloses"]
    browser.evaluate("state.wsDone = true; socket.close(); source.close()")


def test_exec_output_resumes_after_a_network_cut(site: Site, browser: Chromium) -> None:
    # given: a background command printing for ~3 s, followed by the page
    bucket = mounted(site)
    started = site.http.post("/exec", json={
        "bucket": bucket, "background": True,
        "command": "for i in $(seq 1 30); do echo \"line $i ✓ ünïcödé\"; sleep 0.1; done"})
    assert started.status_code == 202, started.text
    path = f"/exec/{started.json()['id']}/logs"
    browser.evaluate(f"followSSE({json.dumps(site.proxy.url + path)}, "
                     "['start', 'stdout', 'stderr', 'exit'], 'exit')")
    browser.wait_for("state.sse.length >= 6")

    # when: the network drops mid-command
    site.proxy.cut()

    # then: the EventSource resumes with Last-Event-ID and ends with exactly the server's events
    browser.wait_for("state.sseDone", timeout=60)
    state = page_state(browser)
    expected = server_sequence(site, path)
    assert state["sse"] == expected
    assert [int(e["id"]) for e in expected] == list(range(len(expected)))
    assert "".join(e["data"]["data"] for e in expected if e["type"] == "stdout") == \
        "".join(f"line {i} ✓ ünïcödé\n" for i in range(1, 31))
    assert state["sseOpens"] >= 2, state


def test_preview_logs_resume_after_a_network_cut(site: Site, browser: Chromium,
                                                 ports_lock: None) -> None:
    # given: a running preview that logs a line every 50 ms, followed by the page
    bucket = mounted(site)
    workspace = site.http.get(f"/mounts/{bucket}").json()["path"]
    with open(f"{workspace}/ticker.js", "w") as script:
        script.write(TICKER_JS)
    preview = site.http.post("/previews/start", json={"bucket": bucket,
                                                      "command": "node ticker.js"})
    assert preview.status_code == 201, preview.text
    try:
        path = f"/previews/{bucket}/logs?tail=100000"
        browser.evaluate(f"followSSE({json.dumps(site.proxy.url + path)}, ['log', 'end'], 'end')")
        browser.wait_for("state.sse.filter(e => e.data.line.startsWith('tick')).length >= 10")

        # when: the network drops while lines keep coming, and later the preview stops
        site.proxy.cut()
        browser.wait_for("state.sseOpens >= 2 && "
                         "state.sse.filter(e => e.data.line.startsWith('tick')).length >= 40")
    finally:
        stopped = site.http.post("/previews/stop", json={"bucket": bucket})
    assert stopped.status_code == 200, stopped.text

    # then: the page ends with exactly the server's lines, each once, in order
    browser.wait_for("state.sseDone", timeout=60)
    state = page_state(browser)
    expected = server_sequence(site, path)
    assert state["sse"] == expected
    ticks = [int(e["data"]["line"].split()[1]) for e in expected
             if e["data"].get("line", "").startswith("tick")]
    assert ticks == list(range(len(ticks))) and len(ticks) >= 40


def mounted(site: Site) -> str:
    bucket = f"br-{secrets.token_hex(4)}"
    # The signed-in user reaches a bucket through a project of theirs naming it (docs/security.md,
    # "Tenants").
    project = site.http.post("/projects", json={"name": "browser"}).json()["id"]
    branch = site.http.post(f"/projects/{project}/branches",
                            json={"name": "main", "bucket": bucket})
    assert branch.status_code == 201, branch.text
    response = site.http.post("/mounts", json={"bucket": bucket}, timeout=180)
    assert response.status_code in (200, 201), response.text
    return bucket


def trigger(http: httpx.Client, project_id: str, branch_id: str, model: str) -> str:
    response = http.post("/trigger", json={
        "project_id": project_id, "branch_id": branch_id, "model": model,
        "message": {"content": [{"type": "text", "text": "Build it"}]}})
    assert response.status_code in (200, 201, 202), response.text
    return response.json()["run_id"] if "run_id" in response.json() else response.json()["id"]


def run_wait(http: httpx.Client, run_id: str) -> None:
    status: dict[str, Any] = {}

    def finished() -> bool:
        status.update(http.get(f"/runs/{run_id}").json())
        return status["status"] in ("completed", "failed")

    assert runner.wait_until(finished, timeout=120, interval=0.2), status
    assert status["status"] == "completed", status
