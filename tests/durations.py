"""Seconds each test module took in a full run: the order in which `make test`'s workers start
the suite's groups (tests/conftest.py, longest first, so that no long module starts last).

Refresh it from a full run's JUnit report (times under load are fine: only the order counts):

    .venv/bin/python -m pytest -n 3 --junitxml=/tmp/run.xml
    .venv/bin/python -m tests.durations /tmp/run.xml
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

FILE = Path(__file__).resolve().parent / "durations.json"
# A module the file does not know yet (new since it was written): a typical module's time.
DEFAULT_SECONDS = 10.0


def load() -> dict[str, float]:
    """Module path (tests/x/test_y.py) -> seconds; empty when the file is missing or damaged."""
    try:
        return {str(k): float(v) for k, v in json.loads(FILE.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def from_junit(report: Path) -> dict[str, float]:
    """Each module's total (setup, call and teardown of its tests) in a JUnit report."""
    seconds: Counter[str] = Counter()
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        parts = (case.get("classname") or "").split(".")
        # tests.x.test_y or tests.x.test_y.TestClass: the module is the lower-case part.
        module = "/".join(part for part in parts if not part[:1].isupper()) + ".py"
        seconds[module] += float(case.get("time") or 0)
    return {module: round(total, 1) for module, total in sorted(seconds.items())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write tests/durations.json (seconds per test module) from a full run's "
                    "JUnit report (pytest --junitxml): the longest groups start first.")
    parser.add_argument("report", type=Path, help="the JUnit XML report of a full test run")
    args = parser.parse_args()
    durations = from_junit(args.report)
    FILE.write_text(json.dumps(durations, indent=1) + "\n")
    print(f"{FILE}: {len(durations)} modules, {sum(durations.values()):.0f} s in all")


if __name__ == "__main__":
    main()
