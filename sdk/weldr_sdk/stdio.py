"""`weldr mcp`: the MCP server over stdio, calling the agent over HTTP with the configured
credential (one SDK client per tool call)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from mcp.server.mcpserver import Context

from weldr_sdk.aio import AsyncClient
from weldr_sdk.config import Config
from weldr_sdk.mcp_tools import build_server


def serve(config: Config) -> None:
    @asynccontextmanager
    async def client_for(ctx: Context) -> AsyncIterator[AsyncClient]:
        async with AsyncClient(config=config) as client:
            yield client

    anyio.run(build_server(client_for).run_stdio_async)
