"""One machine-readable line per figure, for `bench/summary.py` (and `make bench`).

A benchmark prints its table for people as before, and for each target figure also a line

    BENCH-RESULT {"key": "...", "what": "...", "figure": 1.2, "unit": "s", "target": "≤ 1.5 s",
                  "met": true, "baseline": "python -c pass 0.02 s", "load": "2 CPUs, load 0.4"}

which summary.py collects from the benchmarks' output into one table.
"""

from __future__ import annotations

import json
import os
import time

PREFIX = "BENCH-RESULT "


def load_note() -> str:
    return f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"


def report(*, key: str, what: str, figure: float, unit: str, target: str, met: bool | None,
           baseline: str = "") -> None:
    """Print one result line; `met` None means the figure has no target of its own."""
    line = {"key": key, "what": what, "figure": round(figure, 3), "unit": unit,
            "target": target, "met": met, "baseline": baseline, "load": load_note()}
    print(PREFIX + json.dumps(line, ensure_ascii=False), flush=True)


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs since boot."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def machine_busy(seconds: float = 2.0) -> float:
    """The fraction of the machine's CPU time in use over the next `seconds` (0–1): whether
    anything else runs now, unlike the load average, which still remembers the last minute."""
    idle, total = _cpu_times()
    time.sleep(seconds)
    idle_after, total_after = _cpu_times()
    return 1 - (idle_after - idle) / max(1, total_after - total)
