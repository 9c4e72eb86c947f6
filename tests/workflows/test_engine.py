"""End to end through a real agent process: trigger → plan → tools → version → events → revert."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.conftest import (
    Agent,
    SSEClient,
    WSClient,
    connected,
    requests_seen,
    write_script,
)
from weldr_agent import runner

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(600)]


@pytest.fixture
def agent(shared_agent: Agent) -> Agent:
    """One agent for the module: each test makes its own project and branch (its own local
    workspace); only the restart test starts its own (it kills the agent)."""
    return shared_agent


@pytest.fixture
def scripts(shared_scripts: Path) -> Path:
    return shared_scripts


BUILD = [
    {"text": "1. Create hello.txt and src/app.js\n2. Edit the greeting\n3. Check it"},
    {"text": "Writing the files.", "tool_calls": [
        {"name": "write_file", "arguments": {"path": "hello.txt", "content": "Hello world\n"}},
        {"name": "write_file", "arguments": {"path": "src/app.js",
                                             "content": "console.log('v1');\n"}},
    ]},
    {"text": "Now the edit, a check, and a mistake.", "tool_calls": [
        {"name": "edit_file", "arguments": {"path": "hello.txt", "search": "world",
                                            "replace": "Weldr"}},
        {"name": "run_command", "arguments": {"command": "cat hello.txt && ls src"}},
        {"name": "write_file", "arguments": {"path": "oops.txt"}},
        {"name": "write_file", "raw_arguments": "{\"path\": \"broken"},
        {"name": "read_file", "arguments": {"path": "../../../../etc/passwd"}},
        {"name": "write_file", "arguments": {"path": "/etc/weldr-escape", "content": "x"}},
    ]},
    {"text": "All good.", "tool_calls": [
        {"name": "done", "arguments": {"summary": "Add a greeting and an app script"}},
    ]},
]

CHANGE = [
    {"text": "1. Change the greeting, drop the script"},
    {"tool_calls": [
        {"name": "write_file", "arguments": {"path": "hello.txt", "content": "Bye\n"}},
        {"name": "delete_file", "arguments": {"path": "src/app.js"}},
        {"name": "write_file", "arguments": {"path": "notes/new.md", "content": "# new\n"}},
    ]},
    {"text": "Changed the greeting."},
]


# Not the project's files: git's, and JuiceFS's virtual ones (.accesslog blocks on read).
NOT_PROJECT = {".git", ".trash", ".stats", ".config", ".accesslog"}


def tree(workspace: Path) -> dict[str, str]:
    return {str(p.relative_to(workspace)): p.read_text() for p in sorted(workspace.rglob("*"))
            if not NOT_PROJECT & set(p.relative_to(workspace).parts) and p.is_file()}


def git_log(agent: Agent, bucket: str) -> list[str]:
    """The repository's log, read by git in the bucket's sandbox (never git as root on it)."""
    reply = agent.http.post("/exec", json={"bucket": bucket,  # type: ignore[union-attr]
                                           "command": ["git", "log", "--format=%H %s"]})
    assert reply.status_code == 200 and reply.json()["exit_code"] == 0, reply.text
    return reply.json()["stdout"].splitlines()


def by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def test_run_end_to_end_events_version_and_revert(agent: Agent, scripts: Path) -> None:
    # given a project whose branch has a bucket, and two clients listening
    project_id, branch_id = agent.project_branch()
    bucket = agent.http.get(f"/projects/{project_id}/branches").json()["branches"][0]["bucket"]
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    ws = WSClient(agent, project_id, branch_id, resume=0)
    connected(sse, ws)

    # when the scripted model plans, writes, edits, runs a command and makes mistakes
    reply = agent.trigger(project_id, branch_id, write_script(scripts, "build", BUILD))
    assert reply.status_code == 202, reply.text
    assert reply.json()["status"] == "queued"
    run = agent.run_wait(reply.json()["run_id"])
    workspace = agent.workspace(bucket)

    # then the run completed with one version, holding exactly the files written
    assert run["status"] == "completed", run["error"]
    assert run["current_step"] == ""
    assert [v["number"] for v in run["versions"]] == [1]
    assert run["versions"][0]["description"] == "Add a greeting and an app script"
    assert run["tool_calls"] == 9
    assert tree(workspace) == {"hello.txt": "Hello Weldr\n", "src/app.js": "console.log('v1');\n"}
    assert git_log(agent, bucket)[0] == f"{run['versions'][0]['commit_hash']} " \
                                    "Add a greeting and an app script"
    assert not Path("/etc/weldr-escape").exists()

    # and both clients got the same, complete, ordered sequence
    seen_sse, seen_ws = sse.wait(), ws.wait()
    assert seen_sse == seen_ws
    assert [e["id"] for e in seen_sse] == list(range(1, len(seen_sse) + 1))
    types = [e["type"] for e in seen_sse]
    assert types[:3] == ["run.queued", "run.started", "step.started"]
    assert [e["data"]["step"] for e in by_type(seen_sse, "step.started")] == \
        ["planning", "coding", "finalizing"]
    assert types[-2:] == ["version.created", "run.completed"]
    plan = "".join(e["data"]["text"] for e in by_type(seen_sse, "message.delta")
                   if e["data"]["step"] == "planning")
    assert plan == BUILD[0]["text"]
    calls, results = by_type(seen_sse, "tool.call"), by_type(seen_sse, "tool.result")
    assert [c["data"]["name"] for c in calls] == [
        "write_file", "write_file", "edit_file", "run_command", "write_file", "write_file",
        "read_file", "write_file", "done"]
    assert [r["data"]["call_id"] for r in results] == [c["data"]["call_id"] for c in calls]
    errors = [r["data"]["is_error"] for r in results]
    assert errors == [False, False, False, False, True, True, True, True, False]
    assert "Hello Weldr" in results[3]["data"]["content"]
    assert "exit code 0" in results[3]["data"]["content"]
    assert "content" in results[4]["data"]["content"]  # the missing argument is named
    assert "not valid JSON" in results[5]["data"]["content"]
    assert "'..'" in results[6]["data"]["content"]
    assert "absolute" in results[7]["data"]["content"]
    assert [(e["data"]["path"], e["data"]["change"]) for e in by_type(seen_sse, "file.changed")] \
        == [("hello.txt", "created"), ("src/app.js", "created"), ("hello.txt", "modified")]
    created = by_type(seen_sse, "version.created")[0]["data"]
    assert created["number"] == 1 and created["commit_hash"] == run["versions"][0]["commit_hash"]

    # and the model was told about its mistakes, then carried on
    told = requests_seen(scripts, "build")
    assert len(told) == 4  # planning + three coding turns
    assert told[0]["tools"] == [] and "done" in told[1]["tools"]
    last_results = told[3]["messages"][-1]["results"]
    assert [r["is_error"] for r in last_results] == [False, False, True, True, True, True]

    # when a second run changes things, then the first version is restored
    version_1 = run["versions"][0]
    files_1 = tree(workspace)
    second = agent.run_wait(agent.trigger(project_id, branch_id,
                                          write_script(scripts, "change", CHANGE)).json()["run_id"])
    assert second["status"] == "completed", second["error"]
    assert tree(workspace) == {"hello.txt": "Bye\n", "notes/new.md": "# new\n"}
    assert second["versions"][0]["description"] == "Changed the greeting."
    reverted = agent.http.post("/revert", json={"project_id": project_id, "branch_id": branch_id,
                                                "version_id": version_1["id"]})
    assert reverted.status_code == 200, reverted.text
    assert reverted.json()["success"] is True

    # then the files are exactly those of version 1, with history kept as a new commit
    assert tree(workspace) == files_1
    log = git_log(agent, bucket)
    assert log[0].split()[0] == reverted.json()["commit_hash"] != version_1["commit_hash"]
    assert len(log) == 4  # initial, version 1, version 2, the revert
    assert reverted.json()["version"]["number"] == 3


def test_reconnect_with_last_event_id_misses_nothing(agent: Agent, scripts: Path) -> None:
    # given a client that saw the first events of a run, then dropped
    project_id, branch_id = agent.project_branch()
    early = SSEClient(agent, project_id, branch_id, last_event_id=0, stop_after=5)
    connected(early)
    gate = scripts / "gate"
    turns = [{"text": "plan"}, {"wait_for": str(gate), "tool_calls": [
        {"name": "write_file", "arguments": {"path": "a.txt", "content": "a"}}]},
        {"text": "done"}]
    run_id = agent.trigger(project_id, branch_id, write_script(scripts, "gated", turns)) \
        .json()["run_id"]
    first = early.wait()
    assert len(first) == 5

    # when it reconnects with Last-Event-ID (SSE) and {"last_event_id"} (websocket) mid-run
    sse = SSEClient(agent, project_id, branch_id, last_event_id=first[-1]["id"])
    ws = WSClient(agent, project_id, branch_id, resume=first[-1]["id"])
    connected(sse, ws)
    # a quiet stream carries keep-alive comments (SSE_KEEPALIVE_SECONDS=1 here)
    assert sse.keepalive.wait(60)
    gate.touch()
    assert agent.run_wait(run_id)["status"] == "completed"

    # then together the two connections saw every event exactly once, in order
    rest_sse, rest_ws = sse.wait(), ws.wait()
    assert rest_sse == rest_ws
    whole = first + rest_sse
    assert [e["id"] for e in whole] == list(range(1, len(whole) + 1))
    assert whole[-1]["type"] == "run.completed"

    # when a client resumes after the end through ?last_event_id=, it gets only what followed
    agent_http = agent.http
    with agent_http.stream("GET", "/events", params={
            "project_id": project_id, "branch_id": branch_id,
            "last_event_id": str(whole[-3]["id"])}) as reply:
        lines = []
        for line in reply.iter_lines():
            lines.append(line)
            if line.startswith("event: run.completed"):
                break
    assert [ln for ln in lines if ln.startswith("id: ")] == \
        [f"id: {whole[-2]['id']}", f"id: {whole[-1]['id']}"]


def test_second_trigger_and_revert_during_a_run_get_409(agent: Agent, scripts: Path) -> None:
    project_id, branch_id = agent.project_branch()
    gate = scripts / "hold"
    model = write_script(scripts, "hold", [{"wait_for": str(gate), "text": "plan"}])
    first = agent.trigger(project_id, branch_id, model)
    assert first.status_code == 202

    second = agent.trigger(project_id, branch_id, model)
    revert = agent.http.post("/revert", json={"project_id": project_id, "branch_id": branch_id,
                                              "version_id": "nope"})
    assert second.status_code == 409 and second.json()["code"] == "run_active"
    assert revert.status_code == 404  # unknown version: checked before the branch slot

    gate.touch()
    assert agent.run_wait(first.json()["run_id"])["status"] == "completed"
    again = agent.trigger(project_id, branch_id, model)
    assert again.status_code == 202
    agent.run_wait(again.json()["run_id"])


def test_provider_error_mid_stream_fails_the_run_with_the_error(agent: Agent,
                                                                scripts: Path) -> None:
    project_id, branch_id = agent.project_branch()
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(sse)
    model = write_script(scripts, "boom", [
        {"text": "plan"},
        {"text": "Starting to wri", "error": {"message": "upstream closed the stream"}},
    ])
    run = agent.run_wait(agent.trigger(project_id, branch_id, model).json()["run_id"])

    assert run["status"] == "failed"
    assert "upstream closed the stream" in run["error"]
    events = sse.wait()
    assert events[-1]["type"] == "run.failed"
    assert "upstream closed the stream" in events[-1]["data"]["error"]
    deltas = [e["data"]["text"] for e in events if e["type"] == "message.delta"]
    assert "".join(deltas) == "planStarting to wri"


def test_transient_provider_errors_are_retried(agent: Agent, scripts: Path) -> None:
    project_id, branch_id = agent.project_branch()
    model = write_script(scripts, "flaky", [{"text": "plan", "fail_first": 2}, {"text": "ok"}])
    run = agent.run_wait(agent.trigger(project_id, branch_id, model).json()["run_id"])
    assert run["status"] == "completed", run["error"]
    assert len(requests_seen(scripts, "flaky")) == 4  # 2 failures + planning + coding


def test_agent_restart_mid_run_marks_the_run_failed(agent_factory: Callable[[], Agent],
                                                    scripts: Path) -> None:
    # given an agent of its own (this test kills it), a run blocked inside its coding step
    agent = agent_factory()
    project_id, branch_id = agent.project_branch()
    model = write_script(scripts, "stuck", [
        {"text": "plan"}, {"wait_for": str(scripts / "never"), "text": "x"}])
    run_id = agent.trigger(project_id, branch_id, model).json()["run_id"]
    assert runner.wait_until(
        lambda: agent.http.get(f"/runs/{run_id}").json()["current_step"] == "coding",
        timeout=120, interval=0.2)

    # when the agent dies and comes back
    agent.kill()
    agent.start()

    # then the run is failed with a clear error, and the branch takes new runs
    run = agent.http.get(f"/runs/{run_id}").json()
    assert run["status"] == "failed"
    assert "agent stopped while this run was in progress" in run["error"]
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(sse)
    assert sse.wait()[-1]["type"] == "run.failed"
    retry = agent.trigger(project_id, branch_id, write_script(scripts, "ok", [{"text": "p"}]))
    assert retry.status_code == 202
    assert agent.run_wait(retry.json()["run_id"])["status"] == "completed"
