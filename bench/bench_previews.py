"""Benchmark: a preview's cost against the same Node server run as a bare process, one run.

    .venv/bin/python bench/bench_previews.py [--runs 15] [--warm-pool 20]

Starts a real agent (`manage.py serve`) with its own data directories, marks buckets as mounted
(plain directories: this measures previews, not JuiceFS), then measures, alternating runs:

1. POST /previews/start -> first HTTP 200 on the leased port (through the agent's proxy),
   against `node server.js` started bare with a clean environment -> first HTTP 200;
2. memory: PSS of the bare server vs every process in the preview's cgroup, the cgroup's
   charge, and the agent's own RSS growth per preview;
3. first: 20 previews started at once -> time until all answer, against 20 bare servers; from
   the resting warm pool, then again with the pool the first burst grew.

Holds /tmp/weldr-preview-ports.lock (host ports 3000-3019 are machine-global). Prints figures.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import free_port  # noqa: E402

from bench.results import report  # noqa: E402
from weldr_agent import runner  # noqa: E402

SERVER_JS = """require("http").createServer((q, s) => s.end("ok"))
  .listen(Number(process.env.PORT), process.env.HOST || "127.0.0.1");
"""
POLL_SECONDS = 0.002


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def wait_answer(url: str, timeout: float = 60) -> float:
    """Seconds (monotonic clock) at which `url` first answered 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url):
            return time.monotonic()
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Agent:
    def __init__(self, root: Path, *, warm_pool: int) -> None:
        self.root = root
        self.instance = "b" + secrets.token_hex(3)
        self.env = runner.clean_env({
            "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
            "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "workspace"),
            "WELDR_RUNTIME_DIR": f"/run/weldr-bench-{os.getpid()}",
            "WELDR_INSTANCE_ID": self.instance, "S3_LOCAL_PORT": str(free_port()),
            "PREVIEW_WARM_POOL": str(warm_pool),
            # The buckets are plain directories with no lease in any S3: a renewal would fence
            # them (status lease_lost) a few seconds into the run.
            "MOUNT_LEASE_RENEW_SECONDS": "43200", "MOUNT_LEASE_TTL_SECONDS": "86400",
        })
        self.port = free_port()
        self.process: runner.Popen[bytes] | None = None
        self.token = ""

    def manage(self, *args: str) -> str:
        return runner.run([sys.executable, REPO / "manage.py", *args], env=self.env,
                          timeout=120, cwd=REPO).stdout

    def start(self) -> None:
        for alias in ("default", "shared"):
            self.manage("migrate", "--database", alias, "-v", "0")
        self.token = self.manage("create_api_token", "--name", "bench").strip().splitlines()[-1]
        self.process = runner.spawn([sys.executable, REPO / "manage.py", "serve", "--host",
                                     "127.0.0.1", "--port", str(self.port)], env=self.env,
                                    log_path=self.root / "agent.log", cwd=REPO)
        # /health may say 503 (no Redis here): any answer means the agent serves.
        deadline = time.monotonic() + 120
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError((self.root / "agent.log").read_text()[-3000:])
            time.sleep(0.1)

    def mark_mounted(self, buckets: list[str]) -> None:
        code = (
            "from mounts.models import Mount; from django.conf import settings\n"
            f"for b in {buckets!r}:\n"
            "    p = settings.WORKSPACE_BASE / b; p.mkdir(parents=True, exist_ok=True)\n"
            "    (p / 'server.js').write_text(" + repr(SERVER_JS) + ")\n"
            "    Mount.objects.update_or_create(bucket=b, defaults={\n"
            "        'status': 'mounted', 'cache_size_mb': 100, 'buffer_size_mb': 100})\n"
        )
        self.manage("shell", "-c", code)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def stop(self) -> None:
        if self.process is not None:
            runner.stop(self.process, grace=60)
        shutil.rmtree(self.env["WELDR_RUNTIME_DIR"], ignore_errors=True)


def bare_start(workspace: Path, port: int) -> tuple[runner.Popen[bytes], float]:
    started = time.monotonic()
    process = runner.spawn(["node", "server.js"], env=runner.clean_env({"PORT": str(port)}),
                           log_path=workspace.parent / f"bare-{port}.log", cwd=workspace)
    return process, wait_answer(f"http://127.0.0.1:{port}/") - started


def preview_start(agent: Agent, bucket: str) -> tuple[int, float]:
    started = time.monotonic()
    code, body = agent.call("POST", "/previews/start", {"bucket": bucket,
                                                        "command": "node server.js"})
    if code != 201:
        raise RuntimeError(f"start {bucket}: {code} {body}")
    return body["port"], wait_answer(f"http://127.0.0.1:{body['port']}/") - started


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{ms[0]:6.1f} / {statistics.median(ms):6.1f} / {p90:6.1f} ms (min/median/p90)"


def cgroups(instance: str) -> dict[str, tuple[list[int], int]]:
    """This agent's container cgroups (memory hierarchy): pids and charge of each."""
    found = {}
    for path in Path(f"/sys/fs/cgroup/memory/weldr-{instance}").iterdir():
        if path.is_dir():
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            found[path.name] = (pids, int((path / "memory.usage_in_bytes").read_text()))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of process `pid`: user + system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick)


def warm_count(instance: str) -> int:
    """Warm sandboxes ready (created, not started: no preview runs when this is asked)."""
    return sum(1 for name in cgroups(instance) if "-warm_" in name)


def wait_warm(agent: Agent, wanted: int, timeout: float = 120, settle: float = 20) -> int:
    """Warm sandboxes once `wanted` are ready, or the count has not grown for `settle` s (a
    pool that does not grow; a grown pool waits 5 s after the last start, a busy machine
    holds the refill back for at most 10 s more)."""
    deadline = time.monotonic() + timeout
    count, since = warm_count(agent.instance), time.monotonic()
    while count < wanted and time.monotonic() < deadline and time.monotonic() - since < settle:
        time.sleep(0.5)
        if (now := warm_count(agent.instance)) != count:
            count, since = now, time.monotonic()
    time.sleep(0.5)
    return warm_count(agent.instance)


def burst(agent: Agent, buckets: list[str], bare_dir: Path, label: str) -> tuple[float, float]:
    """Twenty bare servers at once, then twenty previews at once: (bare, previews) seconds
    until all answer. Prints where the agent's CPU went (its own, and its children's: runc,
    ip, iptables and the apps, counted once every preview is stopped and reaped)."""
    ports = [free_port() for _ in buckets]
    mine = cpu_seconds(os.getpid())
    started = time.monotonic()
    bares = [runner.spawn(["node", "server.js"], env=runner.clean_env({"PORT": str(p)}),
                          log_path=agent.root / f"bare-{p}.log", cwd=bare_dir) for p in ports]
    for p in ports:
        wait_answer(f"http://127.0.0.1:{p}/")
    bare_all = time.monotonic() - started
    for process in bares:
        runner.stop(process)
    bare_cpu = cpu_seconds(os.getpid())[1] - mine[1]
    time.sleep(1.0)
    results: dict[str, float] = {}
    assert agent.process is not None
    before = cpu_seconds(agent.process.pid)
    started = time.monotonic()

    def one(bucket: str) -> None:
        results[bucket] = preview_start(agent, bucket)[1]

    threads = [threading.Thread(target=one, args=(b,)) for b in buckets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    preview_all = time.monotonic() - started
    own = cpu_seconds(agent.process.pid)[0] - before[0]
    for bucket in buckets:
        agent.call("POST", "/previews/stop", {"bucket": bucket})
    children = cpu_seconds(agent.process.pid)[1] - before[1]
    print(f"20 at once, {label}: bare {bare_all:.2f} s, previews {preview_all:.2f} s "
          f"({preview_all / bare_all:.2f}x; slowest single preview {max(results.values()):.2f} s)")
    print(f"  CPU: bare servers {bare_cpu:.2f} s; agent until all answered {own:.2f} s, its "
          f"children (runc, ip, iptables, the apps; start and stop) {children:.2f} s")
    return bare_all, preview_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warm-pool", type=int, default=20,
                        help="PREVIEW_WARM_POOL of the agent (its default; 0: every preview "
                             "starts cold)")
    parser.add_argument("--pause", type=float, default=2.0,
                        help="seconds between runs (a quiet agent refills its warm pool)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="weldr-bench-previews-"))
    agent = Agent(root, warm_pool=args.warm_pool)
    lock = open("/tmp/weldr-preview-ports.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        agent.start()
        buckets = [f"bench-{n:02d}" for n in range(20)]
        agent.mark_mounted(buckets)
        bare_dir = agent.root / "workspace" / buckets[0]

        # Warm-up: runtime detection, netns pool, node's files in the page cache.
        port, _ = preview_start(agent, buckets[0])
        agent.call("POST", "/previews/stop", {"bucket": buckets[0]})
        bare, _ = bare_start(bare_dir, free_port())
        runner.stop(bare)

        # Twenty at once: from the resting pool (the figure), then again with the pool that
        # the first burst grew (PREVIEW_WARM_POOL_BURST).
        print(f"warm sandboxes at rest: {wait_warm(agent, args.warm_pool)}")
        bare_all, preview_all = burst(agent, buckets, bare_dir, "resting warm pool")
        report(key="previews_20_at_once", what="20 previews at once, all answering ÷ bare node",
               figure=preview_all / bare_all, unit="×", target="≤ 1.6×",
               met=preview_all / bare_all <= 1.6,
               baseline=f"previews {preview_all:.2f} s, bare node {bare_all:.2f} s")
        grown = wait_warm(agent, len(buckets))
        bare_all, preview_all = burst(agent, buckets, bare_dir,
                                      f"again, the pool grown to {grown}")
        report(key="previews_20_again", what="20 previews at once after a burst ÷ bare node",
               figure=preview_all / bare_all, unit="×", target="—", met=None,
               baseline=f"previews {preview_all:.2f} s, bare node {bare_all:.2f} s, "
                        f"{grown} warm sandboxes")

        # The API's own floor: an authenticated GET of the same preview, round trip.
        api_times = []
        for _ in range(args.runs):
            started = time.monotonic()
            agent.call("GET", f"/previews/{buckets[0]}")
            api_times.append(time.monotonic() - started)
        print(f"API round trip, GET /previews/{{bucket}} {summary(api_times)}")

        bare_times, preview_times = [], []
        for _ in range(args.runs):
            process, elapsed = bare_start(bare_dir, free_port())
            bare_times.append(elapsed)
            runner.stop(process)
            port, elapsed = preview_start(agent, buckets[0])
            preview_times.append(elapsed)
            agent.call("POST", "/previews/stop", {"bucket": buckets[0]})
            # The recycled namespace and the warm sandbox are re-made off the critical path.
            time.sleep(args.pause)
        print(f"start -> first 200, bare node      {summary(bare_times)}")
        print(f"start -> first 200, POST /previews {summary(preview_times)}")
        print(f"  preview overhead at the median: "
              f"{(statistics.median(preview_times) - statistics.median(bare_times)) * 1000:.1f} ms")

        # Memory: one of each, settled.
        time.sleep(args.pause)
        idle = cgroups(agent.instance)
        idle_pss = sum(pss_kb(pid) for pids, _ in idle.values() for pid in pids)
        idle_charge = sum(charge for _, charge in idle.values())
        print(f"memory, idle agent: {len(idle)} warm sandboxes (grown by the bursts), "
              f"PSS {idle_pss / 1024:.1f} MB, "
              f"cgroup charge {idle_charge / 1024**2:.1f} MB")
        process, _ = bare_start(bare_dir, free_port())
        agent_before = rss_kb(agent.process.pid)  # type: ignore[union-attr]
        preview_start(agent, buckets[0])
        time.sleep(1.0)
        bare_pss = pss_kb(process.pid)
        pids, charge = next(entry for entry in cgroups(agent.instance).values()
                            if any("server.js" in cmdline(pid) for pid in entry[0]))
        sandbox_pss = sum(pss_kb(pid) for pid in pids)
        agent_after = rss_kb(agent.process.pid)  # type: ignore[union-attr]
        print(f"memory: bare node PSS {bare_pss / 1024:.1f} MB; preview: {len(pids)} processes, "
              f"PSS {sandbox_pss / 1024:.1f} MB (+{(sandbox_pss - bare_pss) / 1024:.1f} MB), "
              f"cgroup charge {charge / 1024**2:.1f} MB, agent RSS "
              f"+{(agent_after - agent_before) / 1024:.1f} MB")
        runner.stop(process)
        agent.call("POST", "/previews/stop", {"bucket": buckets[0]})
        time.sleep(max(1.0, args.pause))

        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"on {os.cpu_count()} CPUs; warm pool {args.warm_pool}")
    finally:
        agent.stop()
        fcntl.flock(lock, fcntl.LOCK_UN)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
