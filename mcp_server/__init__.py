"""The agent's MCP endpoint, `/mcp` (docs/mcp.md).

Not a Django app (no models, no URLs): an ASGI application placed in front of Django by
weldr_agent/asgi.py. Its tools are the SDK's (sdk/weldr_sdk/mcp_tools.py), the same ones
`weldr mcp` serves over stdio.
"""
