"""One machine-readable line per figure, for `bench/summary.py` (and `make bench`).

A benchmark prints its table for people as before, and for each target figure also a line

    BENCH-RESULT {"key": "...", "what": "...", "figure": 1.2, "unit": "s", "target": "≤ 1.5 s",
                  "met": true, "baseline": "python -c pass 0.02 s", "load": "2 CPUs, load 0.4"}

which summary.py collects from the benchmarks' output into one table.
"""

from __future__ import annotations

import json
import os

PREFIX = "BENCH-RESULT "


def load_note() -> str:
    return f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"


def report(*, key: str, what: str, figure: float, unit: str, target: str, met: bool | None,
           baseline: str = "") -> None:
    """Print one result line; `met` None means the figure has no target of its own."""
    line = {"key": key, "what": what, "figure": round(figure, 3), "unit": unit,
            "target": target, "met": met, "baseline": baseline, "load": load_note()}
    print(PREFIX + json.dumps(line, ensure_ascii=False), flush=True)
