"""Attacks on the MCP endpoint's file tools, planted from inside a real exec sandbox.

The sandbox (uid 1000) plants symlinks to host paths in its workspace; a model then drives the
MCP tools (`/mcp`, as an MCP client would) at those names. The tools go through the files API,
so its rule holds for them: a path through a symlink is refused (400 `is_symlink`), nothing
outside the workspace is read, written or deleted.
"""

# The exec tests' fixtures are imported by name (no shared conftest).
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client as MCPClient
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import AgentProcess
from tests.exec.conftest import agent, bucket, http, token, workspace  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_mcp_file_tools_do_not_follow_links_planted_in_the_sandbox(
        agent: AgentProcess, token: str, http: httpx.Client, bucket: str, workspace: Path):
    # given: links to host paths, made by the sandbox user
    planted = http.post("/exec", json={"bucket": bucket, "command":
                                       "ln -s /etc escape && ln -s /etc/hostname host-link"})
    assert planted.json()["exit_code"] == 0, planted.text
    hostname = Path("/etc/hostname").read_bytes()

    async def attack() -> dict[str, str]:
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        answers = {}
        async with MCPClient(streamable_http_client(f"{agent.url}/mcp",
                                                    http_client=client)) as mcp:
            for name, arguments in [
                ("read_file", {"path": "escape/passwd"}),
                ("read_file", {"path": "host-link"}),
                ("list_files", {"path": "escape"}),
                ("write_file", {"path": "escape/weldr-mcp-pwned", "content": "x"}),
                ("write_file", {"path": "host-link", "content": "overwritten"}),
                ("delete_file", {"path": "escape/hostname"}),
            ]:
                result = await mcp.call_tool(name, {"bucket": bucket, **arguments})
                assert result.is_error, (name, arguments, result.structured_content)
                answers[f"{name} {arguments['path']}"] = result.content[0].text
        return answers

    # when: the model points every file tool at them
    answers = asyncio.run(attack())

    # then: each refused as the files API refuses it, and the host untouched
    assert all(" 400 is_symlink: " in text for text in answers.values()), answers
    assert not any("root:" in text for text in answers.values())
    assert not Path("/etc/weldr-mcp-pwned").exists()
    assert Path("/etc/hostname").read_bytes() == hostname
    assert (workspace / "host-link").is_symlink()
