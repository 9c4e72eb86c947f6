"""Benchmark: POST /exec against a fresh `runc run` of the same sandbox and a bare fork/exec.

    .venv/bin/python bench/bench_exec.py [--runs 200] [--runc-runs 40] [--mb 100]

Starts the test services (S3 server), a real agent (`manage.py serve`) with its own data
directories, mounts a bucket through the API, then measures in one run, interleaved:

1. round trip of POST /exec {"command": ["true"]} over a keep-alive connection, p50 / p99, with
   two clients: the standard library's http.client (the lightest; what the API itself costs)
   and httpx (what a typical Python SDK adds: ~5 ms of its own CPU per request here);
2. `runc run` of the exec sandbox's own OCI config with /bin/true as its process (what a
   fresh sandbox per command would cost at the least), p50 / p99;
3. a bare fork/exec of /bin/true (os.posix_spawn + waitpid), p50 / p99;
4. streaming throughput: POST /exec with Accept: text/event-stream of a command writing
   `--mb` MB to stdout, read to the end, against the same command piped to the bench bare.

Prints figures and ratios (no pass/fail).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

from bench.results import report  # noqa: E402

django.setup()

import httpx  # noqa: E402

logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request is client CPU

from benchlib import free_port  # noqa: E402

from sandbox import bucket_spec  # noqa: E402
from sandbox.container import cgroup_parent_remove  # noqa: E402
from sandbox.oci import hosts_file, rootfs_skeleton  # noqa: E402
from tests.conftest import AgentProcess  # noqa: E402
from weldr_agent import runner  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def show(name: str, values: list[float]) -> tuple[float, float]:
    p50, p99 = pct(values, 0.5), pct(values, 0.99)
    print(f"{name:<42} n={len(values):<4} min {min(values):7.2f}  p50 {p50:7.2f}  "
          f"p99 {p99:7.2f} ms")
    return p50, p99


def bare_true() -> float:
    start = time.perf_counter()
    pid = os.posix_spawn("/bin/true", ["/bin/true"], {})
    os.waitpid(pid, 0)
    return (time.perf_counter() - start) * 1000


class RuncTrue:
    """The exec sandbox's config, with /bin/true as the process, started fresh each time."""

    def __init__(self, root: Path, workspace: Path) -> None:
        self.root = root
        self.bundle = root / "bundle"
        rootfs = root / "rootfs"
        rootfs_skeleton(rootfs)
        hosts_file()
        for mountpoint in bucket_spec.rootfs_mountpoints(rootfs):
            mountpoint.mkdir(parents=True, exist_ok=True)
        (rootfs / "opt" / "weldr" / "sandboxd.py").touch()
        spec = bucket_spec.sandbox_spec(
            name="weldr-bench", rootfs=rootfs, workspace=workspace,
            daemon=REPO / "sandbox" / "sandboxd.py", uid=1000, memory_mb=512, cpus=1.0,
            pids=512, hostname="bench")
        spec["process"]["args"] = ["/bin/true"]
        self.bundle.mkdir()
        (self.bundle / "config.json").write_text(json.dumps(spec))
        self.runc = runner.tool("runc")

    def once(self) -> float:
        name = f"weldr-bench-{secrets.token_hex(4)}"
        start = time.perf_counter()
        runner.run(bucket_spec.runtime_argv(self.runc, root=self.root / "state", verb="run",
                                          name=name, bundle=self.bundle), timeout=60)
        return (time.perf_counter() - start) * 1000


def stream_mb(http: httpx.Client, bucket: str, megabytes: int) -> tuple[float, int]:
    command = f"head -c {megabytes * 1000 * 1000} /dev/zero | tr '\\0' a"
    received = 0
    start = time.perf_counter()
    with http.stream("POST", "/exec", json={"bucket": bucket, "command": command,
                                            "timeout": 600},
                     headers={"Accept": "text/event-stream"}, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line.startswith('data: {"data"'):
                received += len(json.loads(line[6:])["data"])
    return time.perf_counter() - start, received


def bare_stream_mb(megabytes: int) -> float:
    command = f"head -c {megabytes * 1000 * 1000} /dev/zero | tr '\\0' a"
    read_fd, write_fd = os.pipe()
    start = time.perf_counter()
    pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", command], {"PATH": "/usr/bin:/bin"},
                         file_actions=[(os.POSIX_SPAWN_DUP2, write_fd, 1)])
    os.close(write_fd)
    while os.read(read_fd, 1 << 16):
        pass
    os.waitpid(pid, 0)
    os.close(read_fd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--runc-runs", type=int, default=40)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="weldr-bench-exec-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "ws"),
                "WELDR_RUNTIME_DIR": str(root / "run"),
                "WELDR_INSTANCE_ID": secrets.token_hex(3), "LOG_LEVEL": "WARNING"})
    agent = AgentProcess(env, free_port(), root / "agent.log")
    agent.start()
    bucket = f"bench-{secrets.token_hex(3)}"
    try:
        token = agent.manage("create_api_token", "--name", "bench").stdout.strip().split()[-1]
        http = httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {token}"},
                            timeout=120)
        mounted = http.post("/mounts", json={"bucket": bucket}, timeout=300)
        mounted.raise_for_status()
        workspace = Path(mounted.json()["path"])
        runc = RuncTrue(root / "runc", workspace)

        body = json.dumps({"bucket": bucket, "command": ["true"]})

        def httpx_true() -> float:
            start = time.perf_counter()
            response = http.post("/exec", content=body,
                                 headers={"Content-Type": "application/json"})
            elapsed = (time.perf_counter() - start) * 1000
            assert response.status_code == 200 and response.json()["exit_code"] == 0
            return elapsed

        host, port = agent.url.removeprefix("http://").split(":")
        connection = HTTPConnection(host, int(port), timeout=120)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def stdlib_true() -> float:
            start = time.perf_counter()
            connection.request("POST", "/exec", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            elapsed = (time.perf_counter() - start) * 1000
            assert response.status == 200 and json.loads(payload)["exit_code"] == 0
            return elapsed

        for _ in range(5):  # the first exec starts the bucket's sandbox; keep-alive warms up
            httpx_true()
            stdlib_true()
        api, api_httpx, fresh, bare = [], [], [], []
        every = max(1, args.runs // args.runc_runs)
        for index in range(args.runs):
            api.append(stdlib_true())
            api_httpx.append(httpx_true())
            bare.append(bare_true())
            if index % every == 0:
                fresh.append(runc.once())
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        api50, api99 = show("POST /exec true (API, http.client)", api)
        show("POST /exec true (API, httpx)", api_httpx)
        runc50, runc99 = show("runc run of the same sandbox, /bin/true", fresh)
        bare50, bare99 = show("bare fork/exec /bin/true", bare)
        print(f"ratios at p50: API/runc {api50 / runc50:.2f}, API/bare {api50 / bare50:.1f}, "
              f"runc/bare {runc50 / bare50:.1f}")
        report(key="exec_true_p50_ratio", what="POST /exec true p50 ÷ bare fork/exec",
               figure=api50 / bare50, unit="×", target="≤ 5×", met=api50 / bare50 <= 5,
               baseline=f"API {api50:.2f} ms, bare {bare50:.2f} ms, runc run {runc50:.2f} ms")

        seconds, received = stream_mb(http, bucket, args.mb)
        bare_seconds = bare_stream_mb(args.mb)
        print(f"stream {args.mb} MB over SSE: {seconds:.2f} s = {received / seconds / 1e6:.1f} "
              f"MB/s (received {received} bytes); bare pipe: {bare_seconds:.2f} s = "
              f"{args.mb / bare_seconds:.0f} MB/s")
        http.post("/mounts/unmount", json={"bucket": bucket, "force": True}, timeout=300)
    finally:
        agent.stop()
        # RuncTrue's containers live under this process's own parent cgroup (its INSTANCE_ID,
        # not the agent's), which runc makes and never removes.
        cgroup_parent_remove()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
