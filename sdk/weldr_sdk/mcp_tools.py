"""The MCP server's tools: exec, files, previews, mounts and workflows, each a thin call of the
async SDK. The same server runs over stdio (`weldr mcp`, talking to an agent over HTTP) and over
streamable HTTP at the agent's `/mcp` (the agent hands in a client that calls its own API
in-process with the caller's credential, so the API's authentication and authorization apply
to every tool call unchanged)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from weldr_sdk.aio import AsyncClient
from weldr_sdk.errors import APIError, WeldrConnectionError

ClientFor = Callable[[Context], AbstractAsyncContextManager[AsyncClient]]

INSTRUCTIONS = (
    "Weldr Agent: mounted S3 buckets as POSIX workspaces, a sandbox per bucket to run commands "
    "and preview apps, and AI coding workflows. Mount a bucket first (`mount`), then use the "
    "files, exec and preview tools with that bucket's name. Paths are relative to the workspace.")

Bucket = Annotated[str, Field(description="The bucket (workspace) name; mounted with `mount`.")]
FilePath = Annotated[str, Field(description="A path relative to the workspace, no `..`.")]
READ_ONLY = ToolAnnotations(readOnlyHint=True)


def build_server(client_for: ClientFor, *, name: str = "weldr-agent") -> MCPServer:
    """An MCP server whose tools call the agent through `client_for(ctx)`."""
    server = MCPServer(name, instructions=INSTRUCTIONS)

    async def call(ctx: Context, action: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
        async with client_for(ctx) as weldr:
            try:
                return await action(weldr)
            except APIError as error:
                # The model reads the API's code and sentence and can act on them.
                raise ToolError(f"{error.status} {error.code}: {error.detail}") from None
            except WeldrConnectionError as error:
                raise ToolError(str(error)) from None

    @server.tool(description="Run a command in the bucket's sandbox and return its exit code, "
                             "stdout and stderr (capped). `command` is a `sh -c` string or an "
                             "argv list.")
    async def exec(bucket: Bucket, command: str | list[str], ctx: Context,
                   cwd: Annotated[str | None, Field(description="Working directory, "
                                                                "relative")] = None,
                   timeout: Annotated[float | None, Field(description="Seconds (default 60, "
                                                                      "at most 3600)")] = None,
                   stdin: str | None = None) -> dict[str, Any]:
        return await call(ctx, lambda w: w.commands.run(bucket, command, cwd=cwd,
                                                        timeout=timeout, stdin=stdin))

    @server.tool(description="Read a file of the workspace: UTF-8 text, or base64 when it is "
                             "not text.", annotations=READ_ONLY)
    async def read_file(bucket: Bucket, path: FilePath, ctx: Context) -> dict[str, Any]:
        data = await call(ctx, lambda w: w.files.read(bucket, path))
        try:
            return {"path": path, "size": len(data), "text": data.decode("utf-8")}
        except UnicodeDecodeError:
            return {"path": path, "size": len(data),
                    "base64": base64.b64encode(data).decode("ascii")}

    @server.tool(description="Write a whole file (atomic; parent directories created).")
    async def write_file(bucket: Bucket, path: FilePath, content: str, ctx: Context,
                         encoding: Literal["utf-8", "base64"] = "utf-8") -> dict[str, Any]:
        data = base64.b64decode(content) if encoding == "base64" else content.encode()
        return await call(ctx, lambda w: w.files.write(bucket, path, data))

    @server.tool(description="List a directory of the workspace (symlinks are listed, never "
                             "followed).", annotations=READ_ONLY)
    async def list_files(bucket: Bucket, ctx: Context, path: FilePath = ".") -> dict[str, Any]:
        return {"entries": await call(ctx, lambda w: w.files.list(bucket, path))}

    @server.tool(description="Delete a file, or a directory with recursive=true.",
                 annotations=ToolAnnotations(destructiveHint=True))
    async def delete_file(bucket: Bucket, path: FilePath, ctx: Context,
                          recursive: bool = False) -> dict[str, Any]:
        await call(ctx, lambda w: w.files.delete(bucket, path, recursive=recursive))
        return {"path": path, "deleted": True}

    @server.tool(description="Mount a bucket as a workspace on this machine (idempotent).")
    async def mount(bucket: Bucket, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.mounts.mount(bucket))

    @server.tool(description="The mounted buckets.", annotations=READ_ONLY)
    async def list_mounts(ctx: Context) -> dict[str, Any]:
        return {"mounts": await call(ctx, lambda w: w.mounts.list())}

    @server.tool(description="Make every write so far durable in S3 (zero-loss flush).")
    async def sync(bucket: Bucket, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.mounts.sync(bucket))

    @server.tool(description="Take a snapshot of the workspace (image layout): a point-in-time "
                             "copy kept in the bucket, to restore or fork later.")
    async def snapshot_create(bucket: Bucket, ctx: Context, name: str = "",
                              note: str = "") -> dict[str, Any]:
        return await call(ctx, lambda w: w.snapshots.create(bucket, name=name, note=note))

    @server.tool(description="The workspace's snapshots, newest first.", annotations=READ_ONLY)
    async def snapshot_list(bucket: Bucket, ctx: Context) -> dict[str, Any]:
        return {"snapshots": await call(ctx, lambda w: w.snapshots.list(bucket))}

    @server.tool(description="Put the whole workspace back to a snapshot (every file, "
                             "node_modules, .git); its previews and commands are stopped first.")
    async def snapshot_restore(bucket: Bucket, snapshot_id: str, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.snapshots.restore(bucket, snapshot_id))

    @server.tool(description="A new writable workspace `name` from a snapshot, next to the "
                             "original: use `name` as the bucket of exec, files and previews.")
    async def snapshot_fork(bucket: Bucket, snapshot_id: str, name: Bucket,
                            ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.snapshots.fork(bucket, snapshot_id, name))

    @server.tool(description="Start the bucket's preview app (its package.json dev/start "
                             "script unless `command` is given) on a port 3000-3019; returns "
                             "its status and URL.")
    async def preview_start(bucket: Bucket, ctx: Context, port: int | None = None,
                            command: str | None = None) -> dict[str, Any]:
        return await call(ctx, lambda w: w.previews.start(bucket, port=port, command=command))

    @server.tool(description="Stop the bucket's preview app.")
    async def preview_stop(bucket: Bucket, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.previews.stop(bucket))

    @server.tool(description="The bucket's preview: status, port, URL, exit code.",
                 annotations=READ_ONLY)
    async def preview_status(bucket: Bucket, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.previews.get(bucket))

    @server.tool(description="The last lines of the preview app's log.", annotations=READ_ONLY)
    async def preview_logs(bucket: Bucket, ctx: Context, tail: int = 100) -> dict[str, Any]:
        return {"log": await call(ctx, lambda w: w.previews.logs(bucket, tail=tail))}

    @server.tool(description="Projects and their branches (each branch names its bucket).",
                 annotations=READ_ONLY)
    async def list_projects(ctx: Context) -> dict[str, Any]:
        async def both(w: AsyncClient) -> list[dict]:
            projects = await w.workflows.projects()
            return [{**p, "branches": await w.workflows.branches(p["id"])} for p in projects]
        return {"projects": await call(ctx, both)}

    @server.tool(description="Start an AI coding workflow run on a branch with a message; "
                             "returns the run id (follow it with run_status).")
    async def trigger_workflow(project_id: str, branch_id: str, message: str, ctx: Context,
                               model: str | None = None) -> dict[str, Any]:
        run = await call(ctx, lambda w: w.workflows.trigger(project_id, branch_id, message,
                                                            model=model))
        return {"run_id": run.id, "status": "queued"}

    @server.tool(description="A workflow run: status, current step, error, versions.",
                 annotations=READ_ONLY)
    async def run_status(run_id: str, ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.workflows.run(run_id))

    @server.tool(description="Revert a branch to one of its versions.",
                 annotations=ToolAnnotations(destructiveHint=True))
    async def revert(project_id: str, branch_id: str, version_id: str,
                     ctx: Context) -> dict[str, Any]:
        return await call(ctx, lambda w: w.workflows.revert(project_id, branch_id, version_id))

    @server.tool(description="The integrations a workflow can install.", annotations=READ_ONLY)
    async def list_integrations(ctx: Context) -> dict[str, Any]:
        return {"integrations": await call(ctx, lambda w: w.workflows.integrations())}

    return server
