"""The file tools through the real engine: links planted from a real exec sandbox, then a run
whose (scripted) model greps, reads, lists and finds. Nothing of the agent's environment (its
S3 and database credentials) may reach the model's requests, the run or any /events subscriber.
"""

# The workflow tests' fixtures are imported by name (no shared conftest).
# ruff: noqa: F811

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.workflows.conftest import (  # noqa: F401 (fixtures)
    Agent,
    SSEClient,
    agent,
    agent_factory,
    connected,
    requests_seen,
    scripts,
    shared_database,
    workspaces,
    write_script,
)

pytestmark = pytest.mark.slow

PROBE = [
    {"text": "1. Look around"},
    {"text": "Looking.", "tool_calls": [
        {"name": "grep", "arguments": {"pattern": "="}},
        {"name": "grep", "arguments": {"pattern": "=", "path": "environ.txt"}},
        {"name": "grep", "arguments": {"pattern": "=", "path": "src"}},
        {"name": "read_file", "arguments": {"path": "environ.txt"}},
        {"name": "read_file", "arguments": {"path": "src/env.js"}},
        {"name": "read_file", "arguments": {"path": "proc/environ"}},
        {"name": "find_files", "arguments": {"pattern": "*"}},
        {"name": "list_directory", "arguments": {"path": "proc"}},
        {"name": "edit_file", "arguments": {"path": "environ.txt", "search": "=",
                                            "replace": "x"}},
    ]},
    {"text": "Done.", "tool_calls": [{"name": "done", "arguments": {"summary": "Looked"}}]},
]


def environ_of(pid: int) -> list[str]:
    """`NAME=value` entries (values of 8+ characters) of a process's initial environment."""
    with open(f"/proc/{pid}/environ", "rb") as handle:
        entries = handle.read().decode(errors="replace").split("\0")
    return [entry for entry in entries if "=" in entry and len(entry.split("=", 1)[1]) >= 8]


def test_a_run_never_reads_the_agents_environment_through_planted_links(
        agent: Agent, scripts: Path) -> None:
    # given links to /proc/self/environ planted from inside the bucket's sandbox
    project_id, branch_id = agent.project_branch()
    bucket = agent.http.get(f"/projects/{project_id}/branches").json()["branches"][0]["bucket"]
    assert agent.http.post("/mounts", json={"bucket": bucket}, timeout=180).status_code in (
        200, 201)
    planted = agent.http.post("/exec", json={"bucket": bucket, "command": (
        "ln -s /proc/self/environ environ.txt && mkdir src && echo 'const a = 1' > src/a.js "
        "&& ln -s /proc/self/environ src/env.js && ln -s /proc/self proc")}).json()
    assert planted["exit_code"] == 0, planted
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(sse)

    # when a run's model greps, reads, finds and lists
    reply = agent.trigger(project_id, branch_id, write_script(scripts, "probe", PROBE))
    run = agent.run_wait(reply.json()["run_id"])
    events = sse.wait()

    # then nothing of the agent's environment reached the model, the run or the events
    assert run["status"] == "completed", run["error"]
    assert agent.process.process is not None
    secrets = environ_of(agent.process.process.pid)
    assert any(entry.startswith("DATABASE_URL=") for entry in secrets), secrets
    seen = json.dumps(events) + json.dumps(run) + json.dumps(requests_seen(scripts, "probe"))
    leaked = [entry.split("=", 1)[0] for entry in secrets if entry in seen]
    assert not leaked, leaked
    results = [e["data"] for e in events if e["type"] == "tool.result"]
    assert [r["is_error"] for r in results] == [False, True, False, True, True, True, False,
                                                True, True, False]
    assert "src/a.js:1: const a = 1" in results[0]["content"]
    assert "environ.txt@" in results[6]["content"]
