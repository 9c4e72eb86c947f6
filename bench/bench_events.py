"""Event fan-out latency and the engine's overhead, measured against real agent processes.

    .venv/bin/python bench/bench_events.py [--seconds 3]

1. Fan-out: a scripted model streams text deltas, each carrying time.time() at the moment the
   model hands it to the engine; every delta becomes an event row (PostgreSQL) and a channel
   layer message. One SSE client and one websocket client record arrival times. Reported: p50 /
   p99 latency from the model's delta to each client, at 100 and 1,000 events/s, with the
   in-memory channel layer (no REDIS_URL) and with Redis.
2. Overhead: a scripted run of 50 tool calls (10 turns of 5 write/read calls) whose model answers
   instantly: the run's wall time minus the model's own time is the agent's overhead.

Starts its own PostgreSQL, Redis and S3 server (tests/servers.py) and stops them on exit.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from tests import servers  # noqa: E402

servers.ensure()

import django  # noqa: E402
import psycopg  # noqa: E402

django.setup()

from tests.conftest import AgentProcess  # noqa: E402
from tests.workflows.conftest import (  # noqa: E402
    SCRIPTED,
    Agent,
    SSEClient,
    WSClient,
    connected,
    write_script,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def make_agent(root: Path, scripts: Path, database: str, *, redis: bool) -> Agent:
    home = Path(tempfile.mkdtemp(dir=root))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if not redis:
        env.pop("REDIS_URL", None)
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "DATABASE_URL": database,
                "WORKFLOW_EXTRA_PROVIDERS": SCRIPTED, "WELDR_SCRIPTED_DIR": str(scripts),
                "WORKSPACE_MODE": "local", "WORKSPACE_BASE": str(home / "ws"),
                "WELDR_ENV_VOL": str(home / "env"), "WELDR_RUNTIME_DIR": str(home / "run"),
                "SSE_KEEPALIVE_SECONDS": "5"})
    agent = Agent(AgentProcess(env, servers.free_port(), home / "agent.log"))
    agent.start()
    return agent


def fanout(agent: Agent, scripts: Path, rate: int, seconds: float) -> dict[str, list[float]]:
    project_id, branch_id = agent.project_branch()
    sse = SSEClient(agent, project_id, branch_id)
    ws = WSClient(agent, project_id, branch_id)
    arrivals: dict[str, list[tuple[float, dict]]] = {"sse": [], "ws": []}
    for name, client in (("sse", sse), ("ws", ws)):
        original = client.events

        class Stamped(list):  # records the arrival time of every event
            def append(self, item, _name=name):  # type: ignore[no-untyped-def]
                arrivals[_name].append((time.time(), item))
                super().append(item)

        client.events = Stamped(original)
    connected(sse, ws)
    count = int(rate * seconds)
    model = write_script(scripts, f"fan{rate}{secrets.token_hex(2)}",
                         [{"stream": {"count": count, "rate": rate}}])
    run_id = agent.trigger(project_id, branch_id, model).json()["run_id"]
    agent.run_wait(run_id, timeout=600)
    sse.wait(600)
    ws.wait(600)
    latencies: dict[str, list[float]] = {}
    for name, received in arrivals.items():
        latencies[name] = [
            (at - float(event["data"]["text"])) * 1000 for at, event in received
            if event["type"] == "message.delta" and event["data"]["step"] == "planning"]
    return latencies


def overhead(agent: Agent, scripts: Path) -> tuple[float, int]:
    project_id, branch_id = agent.project_branch()
    turns = [{"text": "plan"}]
    for turn in range(10):
        calls = [{"name": "write_file", "arguments": {"path": f"f{turn}_{n}.txt",
                                                      "content": "x" * 200}}
                 for n in range(3)]
        calls += [{"name": "read_file", "arguments": {"path": f"f{turn}_{n}.txt"}}
                  for n in range(2)]
        turns.append({"tool_calls": calls})
    turns.append({"text": "Done."})
    model = write_script(scripts, "fifty", turns)
    started = time.monotonic()
    run = agent.run_wait(agent.trigger(project_id, branch_id, model).json()["run_id"], 600)
    wall = time.monotonic() - started
    assert run["status"] == "completed" and run["tool_calls"] == 50, run
    return wall, run["tool_calls"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each rate")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-events-"))
    root.chmod(0o755)
    scripts = root / "scripts"
    scripts.mkdir()
    base = os.environ["DATABASE_URL"]
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = base.rsplit("/", 1)[0] + f"/{name}"
    agents: list[Agent] = []
    try:
        print(f"{'layer':8} {'rate/s':>7} {'client':6} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}")
        for redis in (False, True):
            agent = make_agent(root, scripts, database, redis=redis)
            agents.append(agent)
            layer = "redis" if redis else "memory"
            for rate in (100, 1000):
                result = fanout(agent, scripts, rate, args.seconds)
                for client, values in result.items():
                    print(f"{layer:8} {rate:>7} {client:6} {len(values):>6} "
                          f"{statistics.median(values):>8.1f} {percentile(values, 0.99):>8.1f}",
                          flush=True)
            if redis:
                wall, calls = overhead(agent, scripts)
                print(f"\nscripted run, {calls} tool calls, instant model: {wall:.2f} s wall "
                      f"= {wall / calls * 1000:.0f} ms of agent overhead per tool call "
                      "(events, git, database)")
    finally:
        for agent in agents:
            agent.stop()
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
