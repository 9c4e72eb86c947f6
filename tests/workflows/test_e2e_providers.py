"""End to end for each real provider adapter: a real agent process whose SDK client talks to the
provider-protocol server (llm_server.py) in the provider's own wire format.

trigger → the scripted model plans, writes and edits files, runs a command → a version is
committed → SSE and websocket clients see the same ordered events → revert restores the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.workflows.llm_server import Call, Fail, LLMServer, Reply
from tests.workflows.test_engine import by_type, git_log, tree

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(600)]

MODELS = {"anthropic": "anthropic/claude-e2e", "openai": "openai/gpt-e2e",
          "google": "google/gemini-e2e"}
ALL = pytest.mark.parametrize("provider", list(MODELS))
PLAN = ["1. Write hello.txt and src/app.js\n", "2. Edit the greeting\n", "3. Check it"]


@pytest.fixture(scope="module")
def module_llm_agent(tmp_path_factory: pytest.TempPathFactory, module_scripts: Path,
                     module_llm: LLMServer) -> Iterator[Agent]:
    """One agent for the module, its SDKs pointed at the module's provider server: every test
    makes its own project and branch, and the server is reset between tests."""
    with module_agent_started(tmp_path_factory.mktemp("e2e-agent"), module_scripts,
                              **module_llm_env(module_llm)) as started:
        yield started


@pytest.fixture
def llm_server(shared_llm: LLMServer) -> LLMServer:
    return shared_llm


@pytest.fixture
def llm_agent(llm_server: LLMServer, module_llm_agent: Agent) -> Iterator[Agent]:
    yield module_llm_agent
    unmount_all(module_llm_agent)


def build_script(provider: str) -> list[Reply | Fail]:
    # Gemini sends arguments as a JSON object: its mistake is a missing argument instead.
    mistake = Call("write_file", {"path": "oops.txt"}) if provider == "google" else \
        Call("write_file", '{"path": "broken', fragments=2)
    return [
        Reply(text=PLAN, usage=(100, 10)),
        Fail(429, "rate limited (scripted)", retry_after="0"),
        Reply(text=["Writing ", "the files."], usage=(200, 20), calls=[
            Call("write_file", {"path": "hello.txt", "content": "Hello world\n"}, fragments=4),
            Call("write_file", {"path": "src/app.js", "content": "console.log('v1');\n"},
                 fragments=3)]),
        Reply(usage=(300, 30), calls=[
            Call("edit_file", {"path": "hello.txt", "search": "world", "replace": "Weldr"}),
            Call("run_command", {"command": "cat hello.txt && ls src"}),
            mistake]),
        Reply(text="All good.", usage=(400, 40), calls=[
            Call("done", {"summary": "Add a greeting and an app script"})]),
    ]


def tool_results_in(provider: str, body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The (content, is_error) of the tool results at the end of a request, per wire format."""
    if provider == "anthropic":
        return [(b["content"], b["is_error"]) for b in body["messages"][-1]["content"]]
    if provider == "openai":
        tools = [m for m in body["messages"] if m["role"] == "tool"]
        return [(m["content"], m["content"].startswith("Error: ")) for m in tools[-3:]]
    parts = body["contents"][-1]["parts"]
    return [(p["functionResponse"]["response"].get("output")
             or p["functionResponse"]["response"]["error"],
             "error" in p["functionResponse"]["response"]) for p in parts]


@ALL
def test_run_end_to_end_through_the_sdk(llm_server: LLMServer, llm_agent: Agent,
                                        provider: str) -> None:
    # given a branch, two listening clients, and a scripted model behind the real wire format
    agent = llm_agent
    project_id, branch_id = agent.project_branch()
    bucket = agent.http.get(f"/projects/{project_id}/branches").json()["branches"][0]["bucket"]
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    ws = WSClient(agent, project_id, branch_id, resume=0)
    connected(sse, ws)
    llm_server.script(provider, build_script(provider))

    # when
    reply = agent.trigger(project_id, branch_id, MODELS[provider])
    assert reply.status_code == 202, reply.text
    run = agent.run_wait(reply.json()["run_id"])
    workspace = agent.workspace(bucket)

    # then one version holds exactly the files written
    assert run["status"] == "completed", run["error"]
    assert [v["number"] for v in run["versions"]] == [1]
    assert run["versions"][0]["description"] == "Add a greeting and an app script"
    assert tree(workspace) == {"hello.txt": "Hello Weldr\n", "src/app.js": "console.log('v1');\n"}
    assert git_log(agent, bucket)[0].split()[0] == run["versions"][0]["commit_hash"]
    # usage as the provider reported it, summed over the turns
    assert (run["input_tokens"], run["output_tokens"]) == (1000, 100)

    # and both clients saw the same ordered events, the plan streamed as deltas (those arriving
    # within one WORKFLOW_EVENT_WINDOW_MS are coalesced into one event: the text is what counts)
    seen_sse, seen_ws = sse.wait(), ws.wait()
    assert seen_sse == seen_ws
    assert [e["id"] for e in seen_sse] == list(range(1, len(seen_sse) + 1))
    assert [e["type"] for e in seen_sse][-2:] == ["version.created", "run.completed"]
    planning = [e["data"]["text"] for e in by_type(seen_sse, "message.delta")
                if e["data"]["step"] == "planning"]
    assert "".join(planning) == "".join(PLAN) and planning
    calls = by_type(seen_sse, "tool.call")
    assert [c["data"]["name"] for c in calls] == [
        "write_file", "write_file", "edit_file", "run_command", "write_file", "done"]
    assert calls[0]["data"]["arguments"] == {"path": "hello.txt", "content": "Hello world\n"}
    results = by_type(seen_sse, "tool.result")
    assert [r["data"]["is_error"] for r in results] == [False, False, False, False, True, False]
    assert ("content" if provider == "google" else "not valid JSON") in \
        results[4]["data"]["content"]

    # and the SDK sent the tool results back in the provider's own format; the 429 was retried
    requests = llm_server.requests_for(provider)
    assert len(requests) == 5  # plan, 429, three coding turns
    answered = tool_results_in(provider, requests[4].body)
    assert [is_error for _, is_error in answered] == [False, False, True]
    assert "Hello Weldr" in answered[1][0]
    assert requests[0].body.get("tools") in (None, [])  # planning offers no tools
    assert llm_server.remaining(provider) == 0

    # when a second run changes the files, then reverting restores version 1 exactly
    llm_server.script(provider, [
        Reply(text="Change the greeting."),
        Reply(calls=[Call("write_file", {"path": "hello.txt", "content": "Bye\n"}),
                     Call("delete_file", {"path": "src/app.js"})]),
        Reply(text="Changed the greeting."),
    ])
    second = agent.run_wait(agent.trigger(project_id, branch_id, MODELS[provider])
                            .json()["run_id"])
    assert second["status"] == "completed", second["error"]
    assert tree(workspace) == {"hello.txt": "Bye\n"}
    reverted = agent.http.post("/revert", json={
        "project_id": project_id, "branch_id": branch_id,
        "version_id": run["versions"][0]["id"]})
    assert reverted.status_code == 200, reverted.text
    assert tree(workspace) == {"hello.txt": "Hello Weldr\n", "src/app.js": "console.log('v1');\n"}


@ALL
def test_provider_stream_failure_fails_the_run_cleanly(llm_server: LLMServer, llm_agent: Agent,
                                                       provider: str) -> None:
    # given: planning works; the coding turn breaks after some text has been streamed
    agent = llm_agent
    project_id, branch_id = agent.project_branch()
    sse = SSEClient(agent, project_id, branch_id, last_event_id=0)
    connected(sse)
    llm_server.script(provider, [
        Reply(text="plan"),
        Reply(text=["Starting ", "to write"], fail_after=1),
        Reply(text="never asked for"),
    ])

    # when
    run = agent.run_wait(agent.trigger(project_id, branch_id, MODELS[provider])
                         .json()["run_id"])

    # then the run failed with the provider's error, the partial text was not repeated
    assert run["status"] == "failed"
    assert "not retried" in run["error"]
    events = sse.wait()
    assert events[-1]["type"] == "run.failed"
    assert events[-1]["data"]["error"] == run["error"]
    deltas = [e["data"]["text"] for e in by_type(events, "message.delta")]
    assert deltas == ["plan", "Starting "]
    assert len(llm_server.requests_for(provider)) == 2
    assert llm_server.remaining(provider) == 1


@ALL
def test_a_rejected_key_fails_the_run_without_retries(llm_server: LLMServer, llm_agent: Agent,
                                                      provider: str) -> None:
    agent = llm_agent
    project_id, branch_id = agent.project_branch()
    llm_server.script(provider, [Fail(401, "invalid api key (scripted)"), Reply(text="no")])

    run = agent.run_wait(agent.trigger(project_id, branch_id, MODELS[provider])
                         .json()["run_id"])

    assert run["status"] == "failed"
    assert "invalid api key (scripted)" in run["error"] and "401" in run["error"]
    assert len(llm_server.requests_for(provider)) == 1


def test_the_run_records_the_model_and_the_request_names_it(llm_server: LLMServer,
                                                            llm_agent: Agent) -> None:
    agent = llm_agent
    project_id, branch_id = agent.project_branch()
    llm_server.script("anthropic", [Reply(text="plan"), Reply(text="nothing to do")])

    run = agent.run_wait(agent.trigger(project_id, branch_id, MODELS["anthropic"])
                         .json()["run_id"])

    assert run["status"] == "completed", run["error"]
    assert run["model"] == MODELS["anthropic"]
    body = llm_server.requests_for("anthropic")[0].body
    assert body["model"] == "claude-e2e" and body["stream"] is True
    assert json.dumps(body["messages"][0]["content"]).count("Build it") == 1
