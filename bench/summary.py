"""Run the benchmarks and print one table of every target: figure, target, met or not.

    .venv/bin/python bench/summary.py                 # every bench/bench_*.py, then the table
    .venv/bin/python bench/summary.py --only startup,db_connections
    .venv/bin/python bench/summary.py --from LOG...   # the table from saved benchmark output

Each benchmark prints its own tables as before (passed through here) and a `BENCH-RESULT {json}`
line per target figure (bench/results.py). A target of issue 17 that no benchmark reported
appears as "not measured", so the table always shows the whole list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.results import PREFIX  # noqa: E402
from weldr_agent import runner  # noqa: E402

# Every target of issue 17, in the order of the issue, with the benchmark that measures it.
TARGETS = {
    "startup_quiet": ("agent start: spawn → /health 200 (quiet machine)", "≤ 1.5 s", "startup"),
    "startup_load": ("agent start: spawn → /health 200 (under load)", "≤ 3 s", "startup"),
    "rss_idle_after_activity": ("agent RSS idle after activity (5 mounts, exec, failed run)",
                                "≤ 150 MB", "footprint"),
    "pss_agent_5_mounts": ("agent + 5 mounts (image) PSS at rest, whole tree", "≤ 600 MB",
                           "footprint"),
    "pss_agent_5_mounts_worst": ("agent + 5 mounts (image) PSS, every mount writing at once",
                                 "≤ 1 GB", "footprint"),
    "previews_20_at_once": ("20 previews at once, all answering ÷ bare node", "≤ 1.6×",
                            "previews"),
    "remount_known_bucket": ("remount of a known bucket", "≤ 0.5 s", "mounts"),
    "exec_true_p50_ratio": ("POST /exec true p50 ÷ bare fork/exec", "≤ 5×", "exec"),
    "bucket_amplification": ("bucket growth ÷ bytes written (image layout)", "≤ 2×", "bucket"),
    "bucket_live_after_trash": ("bucket ÷ live data after the trash window (image layout)",
                                "≤ 1.5×", "bucket"),
    "bucket_amplification_files": ("bucket growth ÷ bytes written (files layout)", "≤ 2×",
                                   "bucket"),
    "bucket_live_after_trash_files": ("bucket ÷ live data after the trash window (files layout)",
                                      "≤ 1.5×", "bucket"),
    "db_connections_peak": ("PostgreSQL connections of one agent at peak load", "≤ 5",
                            "db_connections"),
    "db_connections_idle": ("PostgreSQL connections of one agent after the load", "≤ 5",
                            "db_connections"),
}


def run(bench: Path) -> list[str]:
    """Run one benchmark, passing its output through; its result lines."""
    print(f"== {bench.relative_to(HERE.parent)}", flush=True)
    found: list[str] = []
    # The benchmark's stderr (progress) goes straight to ours; its stdout is read here.
    with runner.popen([sys.executable, bench], env=dict(os.environ), stderr=None) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith(PREFIX):
                found.append(line)
    if process.returncode:
        print(f"   {bench.name} exited with {process.returncode}", flush=True)
    return found


def collect(lines: list[str]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for line in lines:
        if line.startswith(PREFIX):
            item = json.loads(line[len(PREFIX):])
            results[item["key"]] = item
    return results


def table(results: dict[str, dict]) -> str:
    rows = ["| what | figure | target | met | baseline (same run) | load |",
            "|---|---|---|---|---|---|"]
    for key, (what, target, bench) in TARGETS.items():
        item = results.pop(key, None)
        if item is None:
            where = f"bench_{bench}.py not run" if bench != "-" else "no benchmark yet"
            rows.append(f"| {what} | not measured | {target} | ? | {where} | |")
            continue
        rows.append(_row(item))
    rows += [_row(item) for item in results.values()]  # figures without an issue-17 target
    return "\n".join(rows)


def _row(item: dict) -> str:
    met = {True: "**yes**", False: "**no**", None: "–"}[item["met"]]
    return (f"| {item['what']} | {item['figure']:g} {item['unit']} | {item['target']} | {met} "
            f"| {item['baseline']} | {item['load']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names: startup,exec,…")
    parser.add_argument("--from", dest="logs", nargs="*", type=Path, default=None,
                        metavar="LOG", help="build the table from saved output instead")
    args = parser.parse_args()
    lines: list[str] = []
    if args.logs is not None:
        for log in args.logs:
            lines += log.read_text().splitlines()
    else:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        for bench in sorted(HERE.glob("bench_*.py")):
            if not wanted or bench.stem.removeprefix("bench_") in wanted:
                lines += run(bench)
    print("\n" + table(collect(lines)))


if __name__ == "__main__":
    main()
