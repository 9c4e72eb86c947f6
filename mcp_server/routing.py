"""Put `/mcp` in front of the agent's HTTP application (weldr_agent/asgi.py)."""

from __future__ import annotations

from typing import Any

PATHS = ("/mcp", "/mcp/")


def with_mcp(api: Any) -> Any:
    """`api` for every path but `/mcp`, which the MCP endpoint serves. The endpoint (and the MCP
    SDK) is imported on the first `/mcp` request: agent start-up does not pay for it."""
    endpoint = None

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal endpoint
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await api(scope, receive, send)
            return
        if endpoint is None:
            from mcp_server.endpoint import MCPEndpoint

            endpoint = MCPEndpoint(api)
        await endpoint(scope, receive, send)

    return application
