"""Each command sent to a bucket's sandbox runs exactly once (the agent's git relies on it)."""

from __future__ import annotations

import secrets
from pathlib import Path

from commands.services import exec_bucket_cleanup, sandbox_run


def test_three_hundred_commands_run_three_hundred_times(tmp_path: Path) -> None:
    # given a sandbox; the daemon hands most requests to a spare child it made ahead
    bucket = f"once-{secrets.token_hex(3)}"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    try:
        # when 300 commands each append a line
        for _ in range(300):
            result = sandbox_run(bucket=bucket, workspace=workspace,
                                 argv=["/bin/sh", "-c", "echo $$ >> runs"],
                                 env={"PATH": "/usr/bin:/bin"}, timeout=30)
            assert result.exit_code == 0, result
    finally:
        exec_bucket_cleanup(bucket)

    # then there are 300 lines: no request was started twice (a spare that had already taken
    # a request used to be killed and the request cloned again)
    assert len((workspace / "runs").read_text().splitlines()) == 300
