"""Start-up time and idle memory of the agent, as `make run` starts it.

For each run: `manage.py serve` on a free port with embedded defaults (SQLite for both
databases, in-memory channel layer, the agent's own local S3 server), timed from spawn to the
first `GET /health` answering 200 (and the CPU time the agent's processes used until then, a
figure less sensitive to a busy machine than the wall clock); then, after a few idle seconds,
the resident memory (RSS) of the agent process and of its whole process tree (the local S3
server included). A "fresh" start has an empty data directory (migrations run); a "warm" start
reuses the previous one.

Baselines from the same run: the interpreter alone (`python -c pass`) and a bare
`django.setup()` with the agent's settings (the imports every Django process pays).

    .venv/bin/python bench/bench_startup.py [--runs 5]

Prints the median and the range of each figure, and BENCH-RESULT lines for bench/summary.py
(the warm start against issue 17's target: ≤ 1.5 s on a quiet machine, ≤ 3 s under load, "quiet"
meaning that less than a quarter of the machine's CPU time was in use in the 2 s before the first
start; the load average at the end counts the benchmark's own starts); no assertion (figures, not a
test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import free_port  # noqa: E402

from bench.results import machine_busy, report  # noqa: E402
from weldr_agent import runner  # noqa: E402

IDLE_SECONDS = 5
# "Quiet": less than this fraction of the CPU time in use before the first start.
QUIET_BUSY = 0.25


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU of a process (and, with `reaped`, of its waited-for children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    for child in children.read_text().split() if children.exists() else []:
        found += tree(int(child))
    return found


def one_start(data: Path) -> tuple[float, float, int, int]:
    """Seconds to /health 200, CPU seconds spent until then, agent RSS and tree RSS (KiB)."""
    port = free_port()
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({
        "WELDR_ENV_VOL": str(data / "env"), "WORKSPACE_BASE": str(data / "workspace"),
        "WELDR_RUNTIME_DIR": str(data / "run"), "S3_LOCAL_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    })
    started = time.monotonic()
    process = runner.spawn([sys.executable, REPO / "manage.py", "serve", "--host", "127.0.0.1",
                            "--port", str(port)], env=env, log_path=data / "agent.log", cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        if not runner.wait_until(lambda: process.poll() is not None or health_ok(url),
                                 timeout=300, interval=0.1) or process.poll() is not None:
            raise SystemExit(f"agent did not become healthy:\n{(data / 'agent.log').read_text()}")
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(process.pid, reaped=True) + sum(
            cpu_seconds(child) for child in tree(process.pid)[1:])
        time.sleep(IDLE_SECONDS)
        return elapsed, cpu, rss_kib(process.pid), sum(rss_kib(p) for p in tree(process.pid))
    finally:
        runner.stop(process, grace=60)


def baseline_seconds(code: str, data: Path) -> float:
    """Wall seconds of `python -c code` with the agent's settings in the environment."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                "WELDR_ENV_VOL": str(data / "env"), "PYTHONPATH": str(REPO)})
    started = time.monotonic()
    runner.run([sys.executable, "-c", code], timeout=300, env=env, cwd=REPO)
    return time.monotonic() - started


def summary(name: str, values: list[float], unit: str) -> str:
    return (f"{name:<34} median {statistics.median(values):8.1f} {unit}"
            f"   (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    busy = machine_busy()
    print(f"CPU in use before the first start: {busy:.0%} of {os.cpu_count()} CPUs")
    results: dict[str, list[tuple[float, float, int, int]]] = {"fresh": [], "warm": []}
    bare: dict[str, list[float]] = {"python -c pass": [], "django.setup()": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="weldr-bench-") as folder:
            data = Path(folder)
            results["fresh"].append(one_start(data))
            results["warm"].append(one_start(data))
            bare["python -c pass"].append(baseline_seconds("pass", data))
            bare["django.setup()"].append(
                baseline_seconds("import django; django.setup()", data))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for kind, rows in results.items():
        print(summary(f"start-up to /health 200, {kind}", [r[0] for r in rows], "s"))
        print(summary(f"CPU time until then, {kind}", [r[1] for r in rows], "s"))
        print(summary(f"idle RSS agent, {kind}", [r[2] / 1024 for r in rows], "MiB"))
        print(summary(f"idle RSS with children, {kind}", [r[3] / 1024 for r in rows], "MiB"))
    for name, values in bare.items():
        print(summary(f"baseline: {name}", values, "s"))
    warm = statistics.median(r[0] for r in results["warm"])
    quiet = busy < QUIET_BUSY
    base = ", ".join(f"{name} {statistics.median(v):.2f} s" for name, v in bare.items())
    report(key="startup_quiet" if quiet else "startup_load",
           what=f"agent start: spawn → /health 200, warm, median of {runs}"
                f" ({'quiet' if quiet else 'under load'})",
           figure=warm, unit="s", target="≤ 1.5 s" if quiet else "≤ 3 s",
           met=warm <= (1.5 if quiet else 3.0), baseline=base)
    report(key="rss_idle_no_activity", what="agent RSS idle, no activity (warm start)",
           figure=statistics.median(r[2] for r in results["warm"]) / 1024, unit="MiB",
           target="(≤ 150 MB after activity: bench_footprint.py)", met=None)


if __name__ == "__main__":
    main()
