"""The LLM SDKs stay out of an agent that has not called a model (#17: start-up time, memory).

Checked from outside, on a real agent: the SDKs' native extensions (jiter, pydantic-core; nothing
else the agent imports loads them) are absent from the process's memory map after start-up, and
still absent after a run that failed because its provider has no API key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AgentProcess, agent_client
from weldr_agent import runner

SDK_EXTENSIONS = ("/jiter/", "/pydantic_core/")


def sdk_mapped(agent: AgentProcess) -> list[str]:
    assert agent.process is not None
    maps = Path(f"/proc/{agent.process.pid}/maps").read_text()
    return [name for name in SDK_EXTENSIONS if name in maps]


def run_without_key(http: httpx.Client) -> dict[str, Any]:
    """Trigger an anthropic run on a new branch; the run once it has ended."""
    project = http.post("/projects", json={"name": "lazy"}).json()["id"]
    branch = http.post(f"/projects/{project}/branches",
                       json={"name": "main", "bucket": "lazy-sdk"}).json()["id"]
    run = http.post("/trigger", json={
        "project_id": project, "branch_id": branch, "model": "anthropic/claude-sonnet-4-5",
        "message": {"content": [{"type": "text", "text": "hi"}]}}).json()["run_id"]
    found: dict[str, Any] = {}

    def ended() -> bool:
        found.update(http.get(f"/runs/{run}").json())
        return found["status"] in ("completed", "failed")

    assert runner.wait_until(ended, timeout=120, interval=0.2), found
    return found


def test_no_sdk_is_loaded_at_start_up_nor_by_a_run_without_its_key(
        agent_process: AgentProcess) -> None:
    # given a started agent without LLM keys
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"):
        agent_process.env.pop(name, None)
    agent_process.env["WORKSPACE_MODE"] = "local"
    agent_process.start(timeout=120)
    # then no SDK was imported to start
    assert sdk_mapped(agent_process) == []

    # when a run is triggered for a provider without a key
    clients = agent_client(agent_process)
    found = run_without_key(next(clients))
    clients.close()

    # then it failed naming the missing key, and still no SDK was imported
    assert found["status"] == "failed"
    assert "ANTHROPIC_API_KEY is not set" in found["error"], found
    assert sdk_mapped(agent_process) == []
