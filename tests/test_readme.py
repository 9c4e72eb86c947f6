"""The README stays true: its configuration table names every variable the settings read."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Read by the test set-up only (tests/servers.py), not a knob of the agent.
TEST_ONLY = {"SHARED_TEST_DB_NAME"}


def settings_variables() -> set[str]:
    source = "".join(path.read_text() for path in (REPO / "weldr_agent" / "settings").glob("*.py"))
    pattern = (r'(?:env\.\w+|integer|number|boolean|duration|choice|optional_integer|_origins'
               r'|_cidrs)\(\s*"([A-Z0-9_]+)"')
    return set(re.findall(pattern, source)) - TEST_ONLY


def test_settings_reads_the_design_documents_variables():
    assert {"DATABASE_URL", "REDIS_URL", "S3_ENDPOINT", "WELDR_ENV_VOL", "WORKSPACE_BASE",
            "FS_MOUNT_OPTIONS", "UPLOAD_DELAY"} <= settings_variables()


def test_readme_documents_every_setting():
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in settings_variables() if f"`{name}`" not in readme)
    assert missing == [], f"README.md's configuration table lacks {missing}"


def test_readme_shows_the_two_commands_and_ci_runs_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
