"""`/mcp`: the SDK's MCP server over streamable HTTP, authenticated and authorized by the API.

Every tool call goes through the agent's own HTTP API in-process (an ASGI call into Django, no
socket) with the caller's credential, so a tool is allowed exactly what the same call over HTTP
is: the same authentication classes, permission (PROJECT_ID ownership) and per-view rules, the
same validation and errors. Before the MCP layer reads a body, the credential is checked with
an in-process `GET /whoami`: none or a bad one gets that answer (401 `not_authenticated`).

Only `Authorization` and `x-api-key` are forwarded: a session cookie is not a credential here,
so a web page a user visits cannot drive the sandbox through the user's browser.

Stateless streamable HTTP with JSON answers: daphne does not run the ASGI lifespan protocol, so
each request runs its own short-lived session manager; nothing outlives a request.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from django.conf import settings

try:
    import weldr_sdk  # noqa: F401
except ImportError:
    # Not installed (a checkout before scripts/setup.sh ran): the repository's own copy, which is
    # the version that matches this agent.
    sys.path.append(str(settings.BASE_DIR / "sdk"))

from mcp.server.mcpserver import Context  # noqa: E402
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager  # noqa: E402
from mcp.server.transport_security import TransportSecuritySettings  # noqa: E402
from weldr_sdk.aio import AsyncClient  # noqa: E402
from weldr_sdk.config import Config  # noqa: E402
from weldr_sdk.mcp_tools import build_server  # noqa: E402

Scope = dict[str, Any]
FORWARDED = ("authorization", "x-api-key")
# No DNS-rebinding check: it protects servers that trust whoever reaches them; this one
# requires a bearer credential, which a rebinding page does not have.
NO_REBINDING_CHECK = TransportSecuritySettings(enable_dns_rebinding_protection=False)


def credential_headers(headers: Any) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() in FORWARDED}


class MCPEndpoint:
    def __init__(self, api: Any) -> None:
        self.api = api
        self.server = build_server(self.client_for)

    def _client(self, host: str, headers: dict[str, str]) -> AsyncClient:
        # An explicit Config: the agent's environment must not lend the caller a credential.
        config = Config(url=f"http://{host}", retries=0)
        return AsyncClient(config=config, headers=headers,
                           transport=httpx.ASGITransport(app=self.api))

    @asynccontextmanager
    async def client_for(self, ctx: Context) -> AsyncIterator[AsyncClient]:
        headers = ctx.headers or {}
        async with self._client(headers.get("host", "localhost"),
                                credential_headers(headers)) as client:
            yield client

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = await self._authenticate(headers.get("host", "localhost"),
                                           credential_headers(headers))
        if refusal is not None:
            await _send(send, refusal)
            return
        manager = StreamableHTTPSessionManager(
            app=self.server._lowlevel_server, stateless=True, json_response=True,
            security_settings=NO_REBINDING_CHECK,
            max_request_body_size=settings.FILE_UPLOAD_MAX_BYTES * 4 // 3 + 65536)
        async with manager.run():
            await manager.handle_request(scope, receive, send)

    async def _authenticate(self, host: str, headers: dict[str, str]) -> httpx.Response | None:
        """None when the API accepts the credential, else its answer (401/403/503)."""
        async with httpx.AsyncClient(base_url=f"http://{host}", headers=headers,
                                     transport=httpx.ASGITransport(app=self.api)) as client:
            response = await client.get("/whoami")
        return None if response.status_code == 200 else response


async def _send(send: Any, response: httpx.Response) -> None:
    keep = ("content-type", "www-authenticate")
    headers = [(k.encode(), v.encode()) for k, v in response.headers.items() if k in keep]
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": headers})
    await send({"type": "http.response.body", "body": response.content})
