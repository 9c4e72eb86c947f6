"""SIGTERM while a scripted workflow run is inside its coding step (local mode): the run is
failed and recorded, its files reach S3, the agent exits 0, and a fresh machine gets both."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import processes_mentioning
from tests.local.conftest import s3_keys
from tests.local.test_shutdown import Client, wipe_machine
from tests.workflows.conftest import SCRIPTED, shared_database, write_script  # noqa: F401
from weldr_agent import runner

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(900)]


def test_sigterm_fails_the_running_step_and_keeps_its_files(agent_process, tmp_path, bucket,
                                                           shared_database):  # noqa: F811
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    release = scripts / "release"
    model = write_script(scripts, "long", [
        {"text": "1. Write a draft\n2. Think for a long time"},
        {"text": "Drafting.", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "draft.txt", "content": "draft 1\n"}}]},
        {"wait_for": str(release), "text": "More.", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "late.txt", "content": "late\n"}}]},
    ])
    agent_process.env.update({
        "WORKSPACE_MODE": "local", "SHUTDOWN_TIMEOUT_SECONDS": "120",
        "WELDR_BRANCH_SYNC_INTERVAL_SECONDS": "3600", "WELDR_BRANCH_MIN_FREE_MB": "0",
        "DATABASE_URL": shared_database, "WORKFLOW_EXTRA_PROVIDERS": SCRIPTED,
        "WELDR_SCRIPTED_DIR": str(scripts),
    })
    agent_process.start(timeout=120)
    client = Client(agent_process)
    project = client.http.post("/projects", json={"name": "demo"}).json()
    branch = client.http.post(f"/projects/{project['id']}/branches",
                              json={"name": "main", "bucket": bucket}).json()
    run_id = client.http.post("/trigger", json={
        "project_id": project["id"], "branch_id": branch["id"], "model": model,
        "message": {"content": [{"type": "text", "text": "Build it"}]}}).json()["run_id"]
    # given the run blocked in its coding step after writing draft.txt
    workspace = tmp_path / "env" / "branches" / "local" / bucket
    assert runner.wait_until(lambda: (workspace / "draft.txt").exists(), timeout=180)
    # when SIGTERM arrives, and then the model answers
    agent_process.process.send_signal(signal.SIGTERM)
    assert runner.wait_until(
        lambda: client.http.get("/health").json().get("code") == "shutting_down", timeout=60)
    release.touch()
    # then the agent exits 0
    assert agent_process.process.wait(timeout=180) == 0, agent_process.log.read_text()[-4000:]
    agent_process.process = None
    # with the step's files in S3 and nothing left running
    assert f"branches/{bucket}/tree/draft.txt" in s3_keys(bucket)
    assert processes_mentioning(str(tmp_path / "env")) == []
    # when a fresh machine starts
    wipe_machine(tmp_path)
    agent_process.start(timeout=120)
    client = Client(agent_process)
    # then the run is recorded as failed by the shutdown, and the files come back
    run = client.http.get(f"/runs/{run_id}").json()
    assert run["status"] == "failed", run
    # (the shutdown's own words; a crash would be reported at start-up in other words)
    assert "stopped during the run" in run["error"], run
    mount = client.mount(bucket)
    assert (Path(mount["path"]) / "draft.txt").read_text() == "draft 1\n"
    assert not (Path(mount["path"]) / "late.txt").exists()
    agent_process.process.send_signal(signal.SIGTERM)
    assert agent_process.process.wait(timeout=180) == 0
    agent_process.process = None
