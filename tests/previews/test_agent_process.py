"""Previews in a real agent process (daphne): log streaming, shutdown, restart reconciliation."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import time
from pathlib import Path

import pytest

from sandbox import warm
from tests.conftest import AgentProcess
from weldr_agent import runner

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

TICKER_JS = """let n = 0;
setInterval(() => console.log(`tick ${n++}`), 100);
require("http").createServer((q, s) => s.end("ok"))
  .listen(Number(process.env.PORT), process.env.HOST);
"""


def containers(runtime_root: Path) -> dict[str, dict]:
    """The agent's containers by name, with their state (`runc list`)."""
    listed = runner.run(["runc", "--root", runtime_root, "list", "--format", "json"],
                        timeout=30).stdout
    return {c["id"]: c for c in json.loads(listed or "null") or []}


def running(runtime_root: Path) -> list[str]:
    """The containers running an app: warm sandboxes run too, a shell waiting for its start."""
    names = []
    for name, state in containers(runtime_root).items():
        try:
            init = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if state["status"] == "running" and warm.WAIT_ARGS[-1].encode() not in init:
            names.append(name)
    return names


class Client:
    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.token = agent.manage("create_api_token", "--name", "t").stdout.strip().splitlines()[-1]

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.agent.port, timeout=120)
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Authorization": f"Bearer {self.token}",
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, json.loads(data or b"{}")


def mount(client: Client, files: dict[str, str]) -> str:
    """A real mount through the agent (its start-up reconciles mounts, so no fake rows)."""
    bucket = f"pa-{secrets.token_hex(4)}"
    code, body = client.call("POST", "/mounts", {"bucket": bucket})
    assert code == 201, body
    for name, text in files.items():
        (Path(body["path"]) / name).write_text(text)
    return bucket


def port_answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def test_logs_follow_as_events_and_the_stream_ends_when_the_client_goes(
        agent_process: AgentProcess, ports_lock: None) -> None:
    agent_process.start()
    client = Client(agent_process)
    bucket = mount(client, {"ticker.js": TICKER_JS})
    code, preview = client.call("POST", "/previews/start",
                                {"bucket": bucket, "command": "node ticker.js"})
    assert code == 201, preview
    assert runner.wait_until(lambda: port_answers(preview["port"]), timeout=120)

    # when: a client follows the log
    conn = http.client.HTTPConnection("127.0.0.1", agent_process.port, timeout=30)
    conn.request("GET", f"/previews/{bucket}/logs?tail=1",
                 headers={"Authorization": f"Bearer {client.token}",
                          "Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    lines = []
    while len([x for x in lines if x.startswith("data: ")]) < 5:
        lines.append(response.fp.readline().decode().strip())
    ticks = [json.loads(x[6:])["line"] for x in lines if x.startswith("data: ")]
    numbers = [int(t.split()[1]) for t in ticks if t.startswith("tick ")]
    # New lines keep arriving, in order.
    assert numbers == sorted(numbers) and len(numbers) >= 4
    assert "event: log" in lines

    # then: when the client goes away the server stops following
    conn.sock.shutdown(2)
    conn.close()
    log = agent_process.log
    assert runner.wait_until(lambda: "log follow ended" in log.read_text(), timeout=60), \
        log.read_text()[-2000:]
    assert client.call("POST", "/previews/stop", {"bucket": bucket})[0] == 200
    assert client.call("POST", "/mounts/unmount", {"bucket": bucket})[0] == 200


def test_agent_shutdown_stops_previews_and_a_restart_reconciles(
        agent_process: AgentProcess, ports_lock: None) -> None:
    agent_process.start()
    client = Client(agent_process)
    bucket = mount(client, {"ticker.js": TICKER_JS})
    code, first = client.call("POST", "/previews/start",
                              {"bucket": bucket, "command": "node ticker.js"})
    assert code == 201
    assert runner.wait_until(lambda: port_answers(first["port"]), timeout=120)

    # when: the agent dies without a chance to clean up
    assert agent_process.process is not None
    os.kill(agent_process.process.pid, signal.SIGKILL)
    agent_process.process.wait()
    agent_process.process = None
    # (its container outlives it: nobody stopped it)
    runtime_root = Path(agent_process.env["WELDR_RUNTIME_DIR"]) / "runc"
    assert len(running(runtime_root)) == 1

    # then: the next start reconciles: container gone, lease free, preview stopped
    agent_process.start()
    assert running(runtime_root) == []
    assert client.call("GET", f"/previews/{bucket}")[1]["status"] == "stopped"
    code, again = client.call("POST", "/previews/start",
                              {"bucket": bucket, "command": "node ticker.js"})
    assert code == 201, again
    assert runner.wait_until(lambda: port_answers(again["port"]), timeout=120), (
        client.call("GET", f"/previews/{bucket}"), agent_process.log.read_text()[-3000:])

    # and a graceful shutdown stops the running preview and removes the warm sandboxes
    agent_process.stop()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and port_answers(again["port"]):
        time.sleep(0.1)
    assert not port_answers(again["port"])
    assert containers(runtime_root) == {}
    # and leaves no cgroup of its own behind (the runtime leaves the sandboxes' parent)
    assert not Path(f"/sys/fs/cgroup/memory/weldr-{agent_process.instance}").exists()
