"""The MCP server with a real MCP client of the official SDK: over streamable HTTP at the
agent's /mcp (authenticated like the API) and over stdio through `weldr mcp`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import httpx2
from mcp import Client as MCPClient
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import AgentProcess

SERVER_JS = ('require("http").createServer((q, s) => s.end("mcp preview"))'
             '.listen(Number(process.env.PORT), process.env.HOST);\n')
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def over_http(agent: AgentProcess, token: str) -> MCPClient:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return MCPClient(streamable_http_client(f"{agent.url}/mcp", http_client=http))


def test_mcp_refuses_a_caller_without_a_valid_credential(agent: AgentProcess):
    for headers in ({}, {"Authorization": "Bearer wat_forged"}, {"x-api-key": "nope"},
                    # A session cookie is not a credential for /mcp.
                    {"Cookie": "better-auth.session_token=x.y"}):
        answer = httpx.post(f"{agent.url}/mcp", json=INITIALIZE,
                            headers={**MCP_HEADERS, **headers}, timeout=30)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.json()["code"] == "not_authenticated"


def test_mcp_over_http_runs_commands_files_and_a_preview(agent: AgentProcess, token: str,
                                                         bucket: str, ports_lock: None):
    async def scenario() -> None:
        async with over_http(agent, token) as mcp:
            tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
            assert {"exec", "read_file", "write_file", "list_files", "preview_start",
                    "trigger_workflow", "snapshot_create", "snapshot_restore",
                    "snapshot_fork"} <= set(tools)
            assert set(tools["exec"].input_schema["required"]) == {"bucket", "command"}

            ran = await mcp.call_tool("exec", {"bucket": bucket, "command": "echo mcp; exit 2"})
            assert not ran.is_error
            assert (ran.structured_content["exit_code"], ran.structured_content["stdout"]) == \
                (2, "mcp\n")

            wrote = await mcp.call_tool("write_file", {"bucket": bucket, "path": "m/a.txt",
                                                       "content": "via mcp\n"})
            assert wrote.structured_content == {"path": "m/a.txt", "size": 8}
            read = await mcp.call_tool("read_file", {"bucket": bucket, "path": "m/a.txt"})
            assert read.structured_content["text"] == "via mcp\n"
            listed = await mcp.call_tool("list_files", {"bucket": bucket, "path": "m"})
            assert [e["name"] for e in listed.structured_content["entries"]] == ["a.txt"]
            missing = await mcp.call_tool("read_file", {"bucket": bucket, "path": "m/b.txt"})
            assert missing.is_error and "404 not_found" in missing.content[0].text

            await mcp.call_tool("write_file", {"bucket": bucket, "path": "mcp.js",
                                               "content": SERVER_JS})
            started = await mcp.call_tool("preview_start", {"bucket": bucket,
                                                            "command": "node mcp.js"})
            assert not started.is_error, started.content
            port = started.structured_content["port"]

            async def running() -> bool:
                status = await mcp.call_tool("preview_status", {"bucket": bucket})
                return status.structured_content["status"] == "running"
            for _ in range(300):
                if await running():
                    break
                await asyncio.sleep(0.2)
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{port}/")).text == "mcp preview"
            stopped = await mcp.call_tool("preview_stop", {"bucket": bucket})
            assert stopped.structured_content["status"] == "stopped"

    asyncio.run(scenario())


def test_weldr_mcp_serves_the_tools_over_stdio(weldr_bin: Path, agent: AgentProcess,
                                               token: str, bucket: str, tmp_path: Path):
    server = StdioServerParameters(command=str(weldr_bin), args=["mcp"], env={
        "WELDR_URL": agent.url, "WELDR_TOKEN": token, "HOME": str(tmp_path)})

    async def scenario() -> None:
        async with MCPClient(server) as mcp:
            assert "exec" in {tool.name for tool in (await mcp.list_tools()).tools}
            ran = await mcp.call_tool("exec", {"bucket": bucket, "command": ["echo", "stdio"]})
            assert ran.structured_content["stdout"] == "stdio\n"

    asyncio.run(scenario())
