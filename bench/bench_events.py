"""Live events: provider delta → subscriber latency, and the agent's overhead per tool call.

    .venv/bin/python bench/bench_events.py [--seconds 3] [--only embedded|memory|redis]
                                           [--subscribers 2,100] [--rates 100,1000]

1. Latency. A provider server speaking Anthropic's real streaming wire format
   (tests/workflows/llm_server.py) streams text deltas at 100 and 1,000 per second; each delta's
   text is the time.time() at which the server wrote it. The agent's real Anthropic adapter reads
   them, the engine publishes them, and subscribers in separate client processes (so that their
   parsing does not slow the server's pacing) record when each delta arrives: 1 SSE + 1
   websocket subscriber, then 50 + 50, all on the same branch. Every subscriber must receive
   every event exactly once and in order (its ids 1, 2, 3… with no gap or repeat), checked.
   Run on the embedded defaults (SQLite, in-memory channel layer, as `make run`), on
   PostgreSQL with the in-memory layer, and on PostgreSQL with Redis (channels-redis).
2. Baseline, same run: a bare channel-layer round trip (group_send → receive on one group,
   in this process) for each layer, the floor of any design that goes through the layer.
3. Overhead. A run of 50 tool calls (10 turns of 3 write_file + 2 read_file) against an
   instantly answering provider, minus a run of the same shape without tools, minus the tools' own
   time and the provider calls' own time (both measured here, in-process, on the same inputs),
   divided by 50.

Starts its own PostgreSQL, Redis and S3 server (tests/servers.py) and stops them on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

MODEL = "anthropic/claude-bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------------------------------------
# Subscribers (run in child processes: `--client sse|ws`)
# ---------------------------------------------------------------------------------------------

class Received:
    """What one subscriber got: latencies of the stamped deltas, and whether ids were 1, 2, 3…"""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ids: list[int] = []
        self.done = False

    def event(self, at: float, event_id: int, kind: str, data: dict[str, Any]) -> None:
        self.ids.append(event_id)
        if kind == "message.delta" and data.get("step") == "planning":
            for stamp in data["text"].split(";"):
                if stamp:
                    self.latencies.append((at - float(stamp)) * 1000)
        if kind in ("run.completed", "run.failed"):
            self.done = True


async def sse_subscriber(host: str, port: int, path: str, token: str, received: Received,
                         ready: asyncio.Event) -> None:
    """A raw HTTP/1.1 SSE reader (chunked), cheap enough that 50 of them keep up."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    chunked = b"transfer-encoding: chunked" in head.lower()
    buffer = b""
    while not received.done:
        if chunked:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            data = data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
        at = time.time()
        buffer += data
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            fields = dict(line.split(": ", 1) for line in frame.decode().split("\n")
                          if ": " in line and not line.startswith(":"))
            if frame.startswith(b":") or frame.startswith(b"retry"):
                ready.set()
            if "id" in fields:
                received.event(at, int(fields["id"]), fields["event"], json.loads(fields["data"]))
    writer.close()


async def ws_subscriber(url: str, token: str, received: Received, ready: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       max_size=None) as socket:
        ready.set()
        async for message in socket:
            at = time.time()
            event = json.loads(message)
            received.event(at, event["id"], event["type"], event["data"])
            if received.done:
                return


async def clients_main(args: argparse.Namespace) -> None:
    received = [Received() for _ in range(args.count)]
    readies = [asyncio.Event() for _ in range(args.count)]
    host, port = "127.0.0.1", args.port
    if args.client == "sse":
        path = f"/events?project_id={args.project}&branch_id={args.branch}"
        tasks = [asyncio.create_task(sse_subscriber(host, port, path, args.token, r, e))
                 for r, e in zip(received, readies, strict=True)]
    else:
        url = f"ws://{host}:{port}/ws/events/{args.project}/{args.branch}"
        tasks = [asyncio.create_task(ws_subscriber(url, args.token, r, e))
                 for r, e in zip(received, readies, strict=True)]
    for ready in readies:
        await ready.wait()
    print("ready", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.timeout)
    latencies = [value for r in received for value in r.latencies]
    in_order = all(r.ids == list(range(r.ids[0], r.ids[0] + len(r.ids))) for r in received
                   if r.ids)
    Path(args.out).write_text(json.dumps({
        "latencies": latencies, "in_order": in_order,
        "events": [len(r.ids) for r in received], "first": [r.ids[:1] for r in received]}))


# ---------------------------------------------------------------------------------------------
# The provider: stamped deltas at a rate, in Anthropic's wire format
# ---------------------------------------------------------------------------------------------

def _sse(event: str, payload: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(payload)}\n\n"


def stamped_frames(count: int, rate: float) -> Iterator[str]:
    """One streamed turn of `count` text deltas, each the time it was written, `rate` a second."""
    yield _sse("message_start", {"type": "message_start", "message": {
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1}}})
    yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})
    start = time.monotonic()
    for n in range(count):
        pause = start + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "text_delta", "text": f"{time.time():.6f};"}})
    yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": count}})
    yield _sse("message_stop", {"type": "message_stop"})


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

def start_clients(kind: str, count: int, agent: Any, project_id: str, branch_id: str,
                  out: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
        [sys.executable, __file__, "--client", kind, "--count", str(count),
         "--port", str(agent.process.port), "--token", agent.token, "--project", project_id,
         "--branch", branch_id, "--out", str(out)],
        stdout=subprocess.PIPE, text=True)
    return process


def latency_round(agent: Any, llm: Any, root: Path, rate: int, seconds: float,
                  per_transport: int, database: str | None) -> dict[str, dict[str, Any]]:
    from tests.workflows.llm_server import Reply

    project_id, branch_id = agent.branch
    clients = {kind: start_clients(kind, per_transport, agent, project_id, branch_id,
                                   root / f"{kind}-{secrets.token_hex(3)}.json")
               for kind in ("sse", "ws")}
    for process in clients.values():
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    time.sleep(1)  # the subscribers' start-up reads are done: what is held now is held idle
    connections = _connections(database) if database else 0
    llm.script("anthropic", [Reply(frames=stamped_frames(int(rate * seconds), rate)),  # type: ignore[arg-type]
                             Reply(text="Done.")])
    agent_cpu, clients_cpu, started = _cpu(agent.process.process.pid), _children_cpu(), \
        time.monotonic()
    run_id = agent.trigger(project_id, branch_id, MODEL).json()["run_id"]
    run = agent.run_wait(run_id, timeout=600)
    assert run["status"] == "completed", run
    results: dict[str, Any] = {}
    for kind, process in clients.items():
        assert process.wait(timeout=600) == 0, f"{kind} clients failed"
        out = Path(process.args[-1])  # type: ignore[index]
        results[kind] = json.loads(out.read_text())
    wall = time.monotonic() - started
    results["cpu"] = {"agent": (_cpu(agent.process.process.pid) - agent_cpu) / wall,
                      "clients": (_children_cpu() - clients_cpu) / wall,
                      "connections": connections}
    return results


def _connections(database: str) -> int:
    """PostgreSQL connections to the agent's database (the bench's own excluded)."""
    import psycopg

    with psycopg.connect(database, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchone()[0]


def _cpu(pid: int) -> float:
    """CPU seconds a running process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def layer_round_trip(layer_config: dict[str, Any], count: int = 500) -> tuple[float, float]:
    """p50 / p99 ms of group_send → receive on a bare channel layer, at about 1,000/s."""
    from channels.layers import BaseChannelLayer
    from django.utils.module_loading import import_string

    layer: BaseChannelLayer = import_string(layer_config["BACKEND"])(
        **layer_config.get("CONFIG", {}))

    async def measure() -> list[float]:
        channel = await layer.new_channel("bench.")
        await layer.group_add("bench-group", channel)
        values = []
        for _ in range(count):
            sent = time.perf_counter()
            await layer.group_send("bench-group", {"type": "x", "t": sent})
            await layer.receive(channel)
            values.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.001)
        await layer.group_discard("bench-group", channel)
        return values

    values = asyncio.run(measure())
    return statistics.median(values), percentile(values, 0.99)


def overhead(agent: Any, llm: Any) -> dict[str, float]:
    """Agent overhead per tool call: of a run's time, what the provider and the tools did not
    use (the engine logs the split), with 50 tool calls, minus the same without tools."""
    from tests.workflows.llm_server import Call, Reply
    from weldr_agent import runner

    turns = []
    for turn in range(10):
        calls = [Call("write_file", {"path": f"f{turn}_{n}.txt", "content": "x" * 200})
                 for n in range(3)]
        calls += [Call("read_file", {"path": f"f{turn}_{n}.txt"}) for n in range(2)]
        turns.append(Reply(calls=calls))

    def split(replies: list[Any]) -> dict[str, float]:
        project_id, branch_id = agent.branch
        llm.script("anthropic", [Reply(text="plan"), *replies, Reply(text="Done.")])
        run_id = agent.trigger(project_id, branch_id, MODEL).json()["run_id"]
        run = agent.run_wait(run_id, 600)
        assert run["status"] == "completed", run
        found: list[str] = []

        def logged() -> bool:
            found[:] = [line for line in agent.process.log.read_text().splitlines()
                        if f"run {run_id} completed" in line]
            return bool(found)

        assert runner.wait_until(logged, timeout=30, interval=0.1), run_id
        line = found[0].split(" completed in ", 1)[1]
        wall, provider, tools, calls = (float(n) for n in re.findall(r"[\d.]+(?= s| tool)",
                                                                       line))
        return {"wall": wall, "provider": provider, "tools": tools, "calls": calls,
                "rest": wall - provider - tools}

    split(turns)  # warm-up: imports, first mount, first git
    with_tools = min((split(turns) for _ in range(3)), key=lambda r: r["rest"])
    without = min((split([]) for _ in range(3)), key=lambda r: r["rest"])
    per_call = (with_tools["rest"] - without["rest"]) / with_tools["calls"] * 1000
    return {**{f"with_{k}": v for k, v in with_tools.items()},
            **{f"without_{k}": v for k, v in without.items()}, "per_call_ms": per_call}


def _instant(text: str) -> float:
    from django.utils.dateparse import parse_datetime

    moment = parse_datetime(text)
    assert moment is not None, text
    return moment.timestamp()


def main(args: argparse.Namespace) -> None:
    from tests import servers

    servers.ensure()
    import django
    import psycopg

    django.setup()
    import logging

    from django.conf import settings

    for logger in ("httpx", "httpx2"):
        logging.getLogger(logger).setLevel(logging.WARNING)

    from tests.conftest import AgentProcess
    from tests.workflows.conftest import Agent
    from tests.workflows.llm_server import LLMServer

    root = Path(tempfile.mkdtemp(prefix="bench-events-"))
    root.chmod(0o755)
    base = os.environ["DATABASE_URL"]
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    database = base.rsplit("/", 1)[0] + f"/{name}"
    llm = LLMServer().start()
    for key, value in llm.env().items():
        os.environ[key] = value
    settings.ANTHROPIC_API_KEY = llm.env()["ANTHROPIC_API_KEY"]
    layers = [layer for layer in ("embedded", "memory", "redis") if args.only in (None, layer)]
    subscribers = [int(n) for n in args.subscribers.split(",")]
    agents: list[Any] = []
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f} (2 CPUs shared)", flush=True)
        print("\nbaseline, bare channel layer round trip (group_send → receive), this process:")
        memory = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
        redis = {"BACKEND": "channels_redis.core.RedisChannelLayer",
                 "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "prefix": "bench"}}
        for layer in ("memory", "redis"):
            p50, p99 = layer_round_trip(memory if layer == "memory" else redis)
            print(f"  {layer:7} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms", flush=True)
        print(f"\n{'setup':8} {'rate/s':>6} {'subs':>5} {'client':6} {'deltas':>8} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  once+in order agent clients (CPU)  "
              "DB connections held by the idle subscribed agent")
        for layer in layers:
            home = Path(tempfile.mkdtemp(dir=root))
            env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
            if layer != "redis":
                env.pop("REDIS_URL", None)
            if layer != "embedded":
                env["DATABASE_URL"] = database
            env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                        "WORKSPACE_MODE": "local", "WORKSPACE_BASE": str(home / "ws"),
                        "WELDR_ENV_VOL": str(home / "env"), "WELDR_RUNTIME_DIR": str(home / "run"),
                        "STREAMS_PER_PRINCIPAL": "1000", "SSE_KEEPALIVE_SECONDS": "5"})
            agent = Agent(AgentProcess(env, servers.free_port(), home / "agent.log"))
            agents.append(agent)
            agent.start()
            # One branch for every round: each new bucket would be one more mount.
            agent.branch = agent.project_branch()
            for subs in subscribers:
                for rate in (int(n) for n in args.rates.split(",")):
                    results = latency_round(agent, llm, root, rate, args.seconds,
                                            max(1, subs // 2),
                                            None if layer == "embedded" else database)
                    cpu = results.pop("cpu")
                    for client, result in results.items():
                        values = result["latencies"]
                        expected = int(rate * args.seconds) * max(1, subs // 2)
                        whole = result["in_order"] and len(values) == expected
                        print(f"{layer:8} {rate:>6} {subs:>5} {client:6} "
                              f"{len(values):>8} {statistics.median(values):>7.1f} "
                              f"{percentile(values, 0.99):>7.1f} {max(values):>7.1f}  "
                              f"{'yes' if whole else 'NO':13} {cpu['agent']:>5.0%} "
                              f"{cpu['clients']:>5.0%}  {cpu['connections']:>3}", flush=True)
            if layer == layers[-1] and not args.no_overhead:
                f = overhead(agent, llm)
                print(f"\noverhead ({layer}, best of 3): run with {f['with_calls']:.0f} tool calls "
                      f"{f['with_wall']:.3f} s = provider {f['with_provider']:.3f} + tools "
                      f"{f['with_tools']:.3f} + agent {f['with_rest']:.3f}; without tools "
                      f"{f['without_wall']:.3f} s = provider {f['without_provider']:.3f} + agent "
                      f"{f['without_rest']:.3f} → {f['per_call_ms']:.1f} ms of agent overhead "
                      "per tool call", flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    finally:
        for agent in agents:
            agent.stop()
        llm.stop()
        with psycopg.connect(base, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="how long the provider streams at each rate (default 3)")
    parser.add_argument("--only", choices=("embedded", "memory", "redis"),
                        help="one setup only (embedded: SQLite and the in-memory layer, as "
                        "`make run`; memory: PostgreSQL and the in-memory layer; redis: "
                        "PostgreSQL and channels-redis)")
    parser.add_argument("--subscribers", default="2,100",
                        help="subscriber counts, half SSE and half websocket (default 2,100)")
    parser.add_argument("--rates", default="100,1000",
                        help="deltas per second to stream (default 100,1000)")
    parser.add_argument("--no-overhead", action="store_true", help="skip the tool-call overhead")
    # Internal: this script started as a subscriber process.
    parser.add_argument("--client", choices=("sse", "ws"), help=argparse.SUPPRESS)
    for name in ("count", "port"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    for name in ("token", "project", "branch", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=900, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.client:
        asyncio.run(clients_main(arguments))
    else:
        main(arguments)
