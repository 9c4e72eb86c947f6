"""scripts/mount-bucket.sh, unmount-bucket.sh and snapshot-bucket.sh, run for real as an
operator would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mounts import steps, system
from tests.mounts.conftest import bucket_name
from weldr_agent import runner

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [REPO / "scripts" / "mount-bucket.sh", REPO / "scripts" / "unmount-bucket.sh",
           REPO / "scripts" / "snapshot-bucket.sh"]


@pytest.fixture
def script_env(tmp_path: Path) -> dict[str, str]:
    """The agent's environment for a hand-run script: its own volume, the test S3 server."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
        "WELDR_ENV_VOL": str(tmp_path / "vol"),
        "WORKSPACE_BASE": str(tmp_path / "ws"),
        "WELDR_RUNTIME_DIR": str(Path(os.environ["WELDR_RUNTIME_DIR"]) / tmp_path.name[-12:]),
        "WORKSPACE_LAYOUT": "files",
    })
    return env


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
def test_scripts_explain_themselves(script):
    result = runner.run([script, "--help"], timeout=10)
    assert result.stdout.startswith(f"Usage: {script.name}")
    assert "BUCKET" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.name)
@pytest.mark.parametrize("args", [[], ["Bad;name"], ["../x"], ["a", "b"], ["--nope", "abc"]])
def test_scripts_refuse_bad_arguments_with_one_line(script, args, script_env):
    result = runner.run([script, *args], timeout=10, check=False, env=script_env)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"{script.name}: ")


def test_mount_and_unmount_scripts_for_real(script_env):
    bucket = bucket_name()
    workspace = Path(script_env["WORKSPACE_BASE"]) / bucket
    mount_sh, unmount_sh, snapshot_sh = SCRIPTS
    try:
        mounted = runner.run([mount_sh, bucket], timeout=180, env=script_env)
        body = json.loads(mounted.stdout.strip().splitlines()[-1])
        assert body["status"] == "mounted" and body["path"] == str(workspace)
        (workspace / "by-hand.txt").write_text("operator")
        synced = runner.run([mount_sh, "--sync", bucket], timeout=180, env=script_env)
        assert json.loads(synced.stdout.strip().splitlines()[-1])["synced_at"]
        assert steps.is_mounted(workspace)
        # a files workspace has no snapshots: refused in one line that says why
        refused = runner.run([snapshot_sh, bucket], timeout=60, env=script_env, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "snapshots_unavailable" in refused.stderr

        gone = runner.run([unmount_sh, bucket], timeout=180, env=script_env)
        assert json.loads(gone.stdout) == {"bucket": bucket, "status": "unmounted"}
        assert not steps.is_mounted(workspace)
        again = runner.run([unmount_sh, bucket], timeout=60, env=script_env, check=False)
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            f"unmount-bucket.sh: CommandError: not_mounted: Bucket '{bucket}' is not mounted."]
    finally:
        runner.run([unmount_sh, "--force", bucket], timeout=180, env=script_env, check=False)
        if steps.is_mounted(workspace):
            runner.run(system.umount_argv(workspace, lazy=True), timeout=30, check=False)


def test_mount_script_with_the_image_layout(script_env, settings):
    # the test process looks at the script's machine state (same paths) to clean up exactly it
    settings.WELDR_ENV_VOL = Path(script_env["WELDR_ENV_VOL"])
    settings.WORKSPACE_BASE = Path(script_env["WORKSPACE_BASE"])
    bucket = bucket_name()
    mount_sh, unmount_sh, snapshot_sh = SCRIPTS
    try:
        mounted = runner.run([mount_sh, "--layout", "image", bucket], timeout=180, env=script_env)
        body = json.loads(mounted.stdout.strip().splitlines()[-1])
        assert body["layout"] == "image"
        assert steps.mount_table()[body["path"]] == "ext4"
        (Path(body["path"]) / "by-hand.txt").write_text("operator")
        # a snapshot by hand, made durable, then listed
        taken = runner.run([snapshot_sh, "--name", "before maintenance", "--note", "by hand",
                            "--durable", bucket], timeout=180, env=script_env)
        snapshot = json.loads(taken.stdout.strip().splitlines()[-1])
        assert (snapshot["name"], snapshot["note"]) == ("before maintenance", "by hand")
        assert snapshot["bucket"] == bucket and snapshot["kind"] == "manual"
        listed = runner.run([snapshot_sh, "--list", bucket], timeout=60, env=script_env)
        assert [item["id"] for item in json.loads(listed.stdout)["snapshots"]] == \
            [snapshot["id"]]
        runner.run([unmount_sh, bucket], timeout=180, env=script_env)
        refused = runner.run([mount_sh, "--layout", "files", bucket], timeout=180,
                             env=script_env, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "layout_mismatch" in refused.stderr
    finally:
        runner.run([unmount_sh, "--force", bucket], timeout=180, env=script_env, check=False)
        steps.teardown(system.paths(bucket), juicefs_pid=None, litestream_pid=None, grace=5)
    assert not steps.leftovers(system.paths(bucket))
