"""PostgreSQL connections one agent holds under load, and after it (issue 17).

Runs the test that measures it, `tests/footprint/test_db_connections.py` (a real agent on a fresh
PostgreSQL database and Redis; 30 SSE subscribers, 3 workflow runs waiting inside a model call and
20 parallel `GET /runs` loops for 8 s; `pg_stat_activity` sampled every 50 ms), and reports its
figures. The target is absolute (≤ SHARED_DB_POOL_SIZE = 5); before the pool the same load
reached 193 connections (the test server's max_connections is 200) and failed requests.

    .venv/bin/python bench/bench_db_connections.py
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results import report  # noqa: E402
from weldr_agent import runner  # noqa: E402

# The test's line: "peak 5 connections (5 backends), 1 9.7s after the load".
FIGURES = re.compile(r"peak (\d+) connections(?: \((\d+) backends\))?, (\d+) ([0-9.]+)s after "
                     r"the load")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    result = runner.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/footprint/test_db_connections.py", "-k", "five"],
        timeout=900, cwd=REPO, check=False)
    found = FIGURES.search(result.stdout)
    if found is None:
        print(result.stdout[-3000:])
        raise SystemExit("the connection test printed no figures")
    peak, after, seconds = int(found[1]), int(found[3]), float(found[4])
    print(f"peak {peak} connections during the load ({found[2] or '?'} PostgreSQL backends), "
          f"{after} {seconds:.1f} s after it "
          f"(test {'passed' if result.returncode == 0 else 'FAILED'})")
    report(key="db_connections_peak", what="PostgreSQL connections of one agent at peak load "
           "(30 SSE + 20 GET /runs loops + 3 runs)", figure=peak, unit="", target="≤ 5",
           met=peak <= 5, baseline="before the pool, same load: 193 (max_connections 200)")
    report(key="db_connections_idle", what="PostgreSQL connections of one agent after the load "
           "(subscribers still open)", figure=after, unit="", target="≤ 5", met=after <= 5,
           baseline=f"{seconds:.1f} s after (SHARED_DB_POOL_MAX_IDLE_SECONDS=2); before: 138 "
                    "after 17 s")


if __name__ == "__main__":
    main()
