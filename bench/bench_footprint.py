"""Memory of the agent idle after activity (issue 17: RSS ≤ 150 MB; with 5 mounts, whole tree
PSS ≤ 600 MB at rest and ≤ 1 GB with every buffer saturated).

A real agent (the test services: PostgreSQL for nothing here, Redis, S3; SQLite shared database
as `make run`), measured idle right after start (the baseline of the same run), then after the
activity of the issue: 5 buckets mounted (`image` layout by default), one `POST /exec`, and one
workflow run that fails (a model of a provider without an API key). The figures: VmRSS of the
agent process, and its smaps_rollup split (anonymous = Python heap and native allocations, file =
mapped libraries and byte code), the whole tree's PSS, and where the agent's Python heap
went (the largest modules it imported during the activity).

Then the whole tree's PSS by process kind (bench/pss.py: the agent, each mount's JuiceFS and
Litestream, the sandboxes of the warm pool and the exec daemons) --idle seconds and --rest
seconds after --workload-files files were written on every mount, and at its peak while every
mount is written at full speed at once (--worst-mb MB of incompressible data each).

--rest takes several times (seconds after the writes, comma-separated); the tree is shown at
each and the figure is the last. At rest means settled: a JuiceFS server keeps the buffers of
its write path in Go's `sync.Pool`s, which survive one garbage collection (in the pools' victim
cache) and are freed by the next; an idle Go process collects once every 2 minutes; and 5
minutes after the writes (UPLOAD_DELAY) the staged blocks go through those buffers again on
their way to S3. So what the writes left is handed back ~300 s after them, taken again by the
upload, and handed back for good ~600 s after them (docs/performance.md, "Mounts: memory"):
150 and 360 s show it held.

    .venv/bin/python bench/bench_footprint.py [--mounts 5] [--idle 10] [--workload-files 2000]
        [--rest 150,360,630] [--worst-mb 512]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from benchlib import free_port  # noqa: E402

from bench import pss  # noqa: E402
from bench.pss import tree  # noqa: E402
from bench.results import report  # noqa: E402
from tests.conftest import AgentProcess  # noqa: E402
from weldr_agent import runner  # noqa: E402


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup of one process, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


def snapshot(pid: int) -> dict[str, float]:
    own = rollup(pid)
    pss_tree = 0
    for member in tree(pid):
        try:
            pss_tree += rollup(member)["Pss"]
        except (OSError, KeyError):
            pass
    return {"rss": own["Rss"] / 1024, "anon": own["Anonymous"] / 1024,
            "file": (own["Rss"] - own["Anonymous"]) / 1024, "pss_tree": pss_tree / 1024}


def show(name: str, figures: dict[str, float]) -> None:
    print(f"{name:<28} RSS {figures['rss']:6.1f} MiB (anonymous {figures['anon']:6.1f}, "
          f"file-backed {figures['file']:6.1f}); whole tree PSS {figures['pss_tree']:7.1f} MiB")


def activity(http: httpx.Client, mounts: int, pid: int) -> None:
    """The issue's activity, showing the agent's memory after each part."""
    buckets = [f"fp-{secrets.token_hex(3)}" for _ in range(mounts)]
    for bucket in buckets:
        reply = http.post("/mounts", json={"bucket": bucket}, timeout=600)
        reply.raise_for_status()
    show(f"after {mounts} mounts", snapshot(pid))
    reply = http.post("/exec", json={"bucket": buckets[0], "command": ["true"]}, timeout=300)
    assert reply.status_code == 200 and reply.json()["exit_code"] == 0, reply.text
    show("after an exec", snapshot(pid))
    project = http.post("/projects", json={"name": "fp"}).json()["id"]
    branch = http.post(f"/projects/{project}/branches",
                       json={"name": "main", "bucket": buckets[0]}).json()["id"]
    run = http.post("/trigger", json={
        "project_id": project, "branch_id": branch, "model": "anthropic/claude-sonnet-4-5",
        "message": {"content": [{"type": "text", "text": "hello"}]}}).json()["run_id"]

    def failed() -> bool:
        return http.get(f"/runs/{run}").json()["status"] == "failed"

    assert runner.wait_until(failed, timeout=300, interval=0.5), "the run did not fail"
    show("after a failed run", snapshot(pid))


def tree_figures(pid: int, instance: str, workspaces: list[Path], env_vol: Path,
                 args: argparse.Namespace) -> None:
    """The whole tree's PSS by process kind, at rest after a workload and at its worst."""
    for workspace in workspaces:
        pss.write_tree(workspace, args.workload_files)
    written = time.monotonic()
    time.sleep(args.idle)
    pss.show(f"{args.idle:.0f} s after {args.workload_files} files were written on each of "
             f"{len(workspaces)} mounts", pss.breakdown(pid, instance))
    # At rest: every Go daemon has had two of its periodic collections (the runtime forces one
    # every 2 minutes; pooled buffers outlive the first) and its scavenger has handed idle heap
    # back. The earlier times show the way there.
    for after in args.rest:
        time.sleep(max(after - (time.monotonic() - written), 0))
        rest = pss.breakdown(pid, instance)
        pss.show(f"at rest, {after:.0f} s after the writes", rest)
    report(key="pss_agent_5_mounts",
           what=f"agent + {len(workspaces)} mounts (image) PSS at rest ({args.rest[-1]:.0f} s "
                f"after the writes), whole tree",
           figure=pss.counted(rest), unit="MiB", target="≤ 600 MB",
           met=pss.counted(rest) * 1.048576 <= 600,
           baseline=f"agent alone {rest.get('agent', (0, 0.0, 0.0))[1]:.0f} MiB")
    if args.worst_mb <= 0:
        return
    peak, buffers, seconds, parts = pss.worst_case(pid, instance, workspaces, env_vol,
                                                   args.worst_mb)
    pss.show(f"peak while writing {args.worst_mb} MB on every mount at once, {seconds:.1f} s "
             f"with sync (JuiceFS's used buffers at most {buffers:.0f} MiB in all)", parts)
    report(key="pss_agent_5_mounts_worst",
           what=f"agent + {len(workspaces)} mounts (image) PSS, every mount writing at once",
           figure=peak, unit="MiB", target="≤ 1 GB", met=peak * 1.048576 <= 1024,
           baseline=f"at rest {pss.counted(rest):.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mounts", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds before measuring")
    parser.add_argument("--workload-files", type=int, default=2000,
                        help="files written on each mount before the PSS at rest")
    parser.add_argument("--rest", type=lambda text: sorted(float(t) for t in text.split(",")),
                        default=[150.0, 360.0, 630.0],
                        help="seconds after the writes when the tree is shown, comma-separated; "
                             "the last is 'at rest' (Go daemons collect every 2 minutes when "
                             "idle, pooled buffers outlive one collection, and the upload 5 "
                             "minutes after the writes takes buffers again)")
    parser.add_argument("--worst-mb", type=int, default=512,
                        help="MB written on every mount at once for the worst case (0: skip)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="weldr-bench-footprint-"))
    instance = secrets.token_hex(3)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY")}
    env.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "ws"),
                "WELDR_RUNTIME_DIR": str(root / "run"),
                "WELDR_INSTANCE_ID": instance, "LOG_LEVEL": "WARNING"})
    agent = AgentProcess(env, free_port(), root / "agent.log")
    agent.start(timeout=120)
    try:
        token = agent.manage("create_api_token", "--name", "bench").stdout.strip().split()[-1]
        assert agent.process is not None
        pid = agent.process.pid
        time.sleep(args.idle)
        before = snapshot(pid)
        with httpx.Client(base_url=agent.url, timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            activity(http, args.mounts, pid)
            time.sleep(args.idle)
            after = snapshot(pid)
            workspaces = [Path(item["path"]) for item in http.get("/mounts").json()["mounts"]]
            tree_figures(pid, instance, workspaces, root / "env", args)
            for item in http.get("/mounts").json().get("mounts", []):
                http.post("/mounts/unmount", json={"bucket": item["bucket"], "force": True},
                          timeout=300)
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        show("idle after start", before)
        show("idle after activity", after)
        report(key="rss_idle_after_activity",
               what=f"agent RSS idle after activity ({args.mounts} mounts, exec, failed run)",
               figure=after["rss"], unit="MiB", target="≤ 150 MB",
               met=after["rss"] * 1.048576 <= 150,
               baseline=f"idle after start {before['rss']:.0f} MiB")
    finally:
        agent.stop(grace=120)
        agent.remove_leftovers()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
