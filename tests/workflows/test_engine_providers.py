"""End to end through each real SDK: a real agent, the protocol server, a real JuiceFS mount.

trigger → the model (scripted in its provider's own wire format) plans, writes and edits files,
runs a command, sends bad arguments → a version is committed → SSE and websocket clients
receive the same ordered events → a later change is reverted exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.workflows.conftest import (
    Agent,
    SSEClient,
    WSClient,
    connected,
    module_agent_started,
    module_llm_env,
    unmount_all,
)
from tests.workflows.llm_server import Call, LLMServer, Reply
from tests.workflows.test_engine import by_type, git_log, tree

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def mount_agent(tmp_path_factory: pytest.TempPathFactory, module_scripts: Path,
                module_llm: LLMServer) -> Iterator[Agent]:
    """One agent for the module, mounting real buckets, its SDKs pointed at the module's
    provider server: each test makes its own project, branch and bucket, unmounted after it."""
    with module_agent_started(tmp_path_factory.mktemp("sdk-agent"), module_scripts,
                              WORKSPACE_MODE="mount", **module_llm_env(module_llm)) as started:
        yield started


@pytest.fixture
def agent(mount_agent: Agent) -> Iterator[Agent]:
    yield mount_agent
    unmount_all(mount_agent)


@pytest.fixture
def llm_server(shared_llm: LLMServer) -> LLMServer:
    return shared_llm

MODELS = {"anthropic": "anthropic/claude-sonnet-4-5", "openai": "openai/gpt-4.1",
          "google": "google/gemini-2.5-pro"}


@pytest.mark.parametrize("provider", list(MODELS))
def test_run_through_the_real_sdk_on_a_mounted_workspace(
        llm_server: LLMServer, agent: Agent, provider: str) -> None:
    # given an agent whose SDKs talk to the protocol server, mounting buckets, and two clients
    project_id, branch_id = agent.project_branch()
    bucket = agent.http.get(f"/projects/{project_id}/branches").json()["branches"][0]["bucket"]
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    ws = WSClient(agent, project_id, branch_id, resume=0)
    connected(sse, ws)
    llm_server.script(provider, [
        Reply(text=["1. Write hello.txt", "\n2. Edit it\n3. Check"]),
        Reply(text="Writing.", calls=[Call("write_file", {"path": "hello.txt",
                                                          "content": "Hello world\n"})]),
        Reply(calls=[Call("edit_file", {"path": "hello.txt", "search": "world",
                                        "replace": "Weldr"}),
                     Call("run_command", {"command": "cat hello.txt"})]),
        Reply(calls=[Call("write_file", {"path": "broken"})]),
        Reply(calls=[Call("done", {"summary": "Greet Weldr"})]),
    ])

    # when
    reply = agent.trigger(project_id, branch_id, MODELS[provider])
    assert reply.status_code == 202
    run = agent.run_wait(reply.json()["run_id"])

    # then the version holds the files, in the bucket's real mount
    assert run["status"] == "completed", run["error"]
    mounts = agent.http.get("/mounts").json()["mounts"]
    assert [m["bucket"] for m in mounts] == [bucket]
    workspace = Path(mounts[0]["path"])
    assert workspace == Path(agent.process.env["WORKSPACE_BASE"]) / bucket
    assert tree(workspace) == {"hello.txt": "Hello Weldr\n"}
    assert run["versions"][0]["description"] == "Greet Weldr"
    assert run["input_tokens"] > 0 and run["output_tokens"] > 0
    seen = sse.wait()
    assert seen == ws.wait()
    assert [e["id"] for e in seen] == list(range(1, len(seen) + 1))
    results = by_type(seen, "tool.result")
    assert [r["data"]["is_error"] for r in results] == [False, False, False, True, False]
    assert "Hello Weldr" in results[2]["data"]["content"]
    assert seen[-2]["type"] == "version.created" and seen[-1]["type"] == "run.completed"
    # and the model got the error for its bad arguments (in its own wire format)
    assert "is a required property" in str(llm_server.requests_for(provider)[-1].body)

    # when a second run changes the file, and version 1 is restored
    llm_server.script(provider, [
        Reply(text="1. Say bye"),
        Reply(calls=[Call("write_file", {"path": "hello.txt", "content": "Bye\n"}),
                     Call("write_file", {"path": "extra/new.txt", "content": "new\n"})]),
        Reply(text="Said bye."),
    ])
    second = agent.run_wait(agent.trigger(project_id, branch_id, MODELS[provider])
                            .json()["run_id"])
    assert second["status"] == "completed", second["error"]
    assert tree(workspace) == {"hello.txt": "Bye\n", "extra/new.txt": "new\n"}
    reverted = agent.http.post("/revert", json={
        "project_id": project_id, "branch_id": branch_id,
        "version_id": run["versions"][0]["id"]})

    # then the tree is exactly version 1's again, as a new commit
    assert reverted.status_code == 200, reverted.text
    assert tree(workspace) == {"hello.txt": "Hello Weldr\n"}
    assert git_log(agent, bucket)[0].split()[0] == reverted.json()["commit_hash"]


def test_provider_error_mid_stream_through_the_sdk(llm_server: LLMServer, agent: Agent) -> None:
    project_id, branch_id = agent.project_branch()
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(sse)
    llm_server.script("anthropic", [
        Reply(text=["Thinking about", " it"], fail_after=1, fault="error")])

    run = agent.run_wait(agent.trigger(project_id, branch_id, MODELS["anthropic"])
                         .json()["run_id"])

    assert run["status"] == "failed"
    events = sse.wait()
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"]["error"] == run["error"]
    assert "provider failed" in run["error"]
    assert [e["data"]["text"] for e in by_type(events, "message.delta")] == ["Thinking about"]
