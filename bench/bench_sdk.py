"""Benchmark: the SDK's exec round trip against raw http.client, and the MCP tool's.

    .venv/bin/python bench/bench_sdk.py [--runs 200] [--mcp-runs 50]

Starts the test services (S3 server), a real agent (`manage.py serve`) with its own data
directories, mounts a bucket, then measures in one run, interleaved, POST /exec
{"command": ["true"]} over a keep-alive connection, p50 / p99:

1. raw `http.client` (the baseline: what the API itself costs);
2. the SDK's sync client, `Client.commands.run(bucket, ["true"])`;
3. the SDK's async client, `await AsyncClient.commands.run(...)` on one event loop;
4. (after) the MCP `exec` tool over streamable HTTP at /mcp with the official MCP client
   (a `tools/call`: the credential checked by an in-process GET /whoami, then POST /exec
   in-process).

Prints figures and the SDK's overhead against the baseline (no pass/fail).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request is client CPU

try:
    import weldr_sdk  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "sdk"))

from bench_exec import show  # noqa: E402  (the same figures as bench_exec)
from benchlib import free_port  # noqa: E402
from weldr_sdk import AsyncClient, Client  # noqa: E402

from tests.conftest import AgentProcess, agent_env  # noqa: E402


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def stdlib_exec(url: str, token: str, bucket: str) -> Callable[[], None]:
    host, port = url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=120)
    body = json.dumps({"bucket": bucket, "command": ["true"]})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def once() -> None:
        connection.request("POST", "/exec", body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        assert response.status == 200 and json.loads(payload)["exit_code"] == 0
    return once


async def mcp_exec(url: str, token: str, bucket: str, runs: int) -> list[float]:
    import httpx2
    from mcp import Client as MCPClient
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    times = []
    async with MCPClient(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp:
        for index in range(runs + 3):
            start = time.perf_counter()
            result = await mcp.call_tool("exec", {"bucket": bucket, "command": ["true"]})
            elapsed = (time.perf_counter() - start) * 1000
            assert result.structured_content["exit_code"] == 0, result.content
            if index >= 3:
                times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--mcp-runs", type=int, default=50)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="weldr-bench-sdk-"))
    agent = AgentProcess(agent_env(root, LOG_LEVEL="WARNING"), free_port(), root / "agent.log")
    agent.start()
    bucket = f"bench-{secrets.token_hex(3)}"
    try:
        token = agent.manage("create_api_token", "--name", "bench").stdout.strip().split()[-1]
        sdk = Client(agent.url, token=token, timeout=120)
        sdk.mounts.mount(bucket)
        raw = stdlib_exec(agent.url, token, bucket)
        loop = asyncio.new_event_loop()
        aio = AsyncClient(agent.url, token=token, timeout=120)

        def sdk_once() -> None:
            assert sdk.commands.run(bucket, ["true"])["exit_code"] == 0

        def aio_once() -> None:
            result = loop.run_until_complete(aio.commands.run(bucket, ["true"]))
            assert result["exit_code"] == 0

        for _ in range(5):  # the first exec starts the bucket's sandbox; keep-alive warms up
            raw(), sdk_once(), aio_once()
        baseline, sync, asynchronous = [], [], []
        for _ in range(args.runs):
            baseline.append(timed(raw))
            sync.append(timed(sdk_once))
            asynchronous.append(timed(aio_once))
        mcp = asyncio.run(mcp_exec(agent.url, token, bucket, args.mcp_runs)) \
            if args.mcp_runs else []
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        raw50, raw99 = show("POST /exec true, raw http.client (baseline)", baseline)
        for name, values in (("SDK Client.commands.run", sync),
                             ("SDK AsyncClient.commands.run", asynchronous),
                             ("MCP tools/call exec (/mcp)", mcp)):
            if not values:
                continue
            p50, p99 = show(name, values)
            print(f"{'':<42} {p50 - raw50:+.2f} ms at p50 ({p50 / raw50:.2f}x), "
                  f"{p99 - raw99:+.2f} ms at p99")
        sdk.mounts.unmount(bucket, force=True)
        loop.run_until_complete(aio.aclose())
        sdk.close()
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
