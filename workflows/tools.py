"""The tools the model gets: each validated, confined to the workspace, its result size-capped.

A tool never raises into the engine: a bad argument, a path outside the workspace or a failed
command becomes an error result the model reads and can correct.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from asgiref.sync import async_to_sync

from commands import argv as command_argvs
from commands import services as commands
from commands.execution import CommandSpec
from mounts import workspace_fs
from previews import services as previews
from weldr_agent.errors import APIError
from workflows import system
from workflows.providers.base import ToolCall, ToolResult, ToolSpec

logger = logging.getLogger("weldr.workflows.tools")

MAX_RESULT_CHARS = 20_000
MAX_READ_BYTES = 512 * 1024
MAX_EDIT_BYTES = 4 * 1024 * 1024
MAX_GREP_FILE_BYTES = 2 * 1024 * 1024
MAX_LIST_ENTRIES = 500
COMMAND_TIMEOUT_DEFAULT = 120
COMMAND_TIMEOUT_MAX = 900
# Not the project's: git's database, dependencies, JuiceFS's trash at the root of a mount.
SKIPPED_DIRS = {".git", "node_modules", ".trash"}


class ToolError(Exception):
    """The model's call cannot be done as asked; the message goes back to the model."""


@dataclass
class ToolContext:
    """What a tool may touch: one workspace, plus callbacks into the run."""

    workspace: Path
    bucket: str
    on_file_changed: Callable[[str, str], None] = lambda path, change: None
    on_integration: Callable[[str, dict[str, Any]], str] | None = None
    done: bool = False
    summary: str = ""
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    handler: Callable[[ToolContext, dict[str, Any]], str]


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


PATH = {"type": "string", "minLength": 1, "description": "Relative to the project root."}
_REGISTRY: dict[str, Tool] = {}


def tool(name: str, description: str, properties: dict[str, Any],
         required: list[str]) -> Callable[[Callable[[ToolContext, dict[str, Any]], str]], Any]:
    def register(handler: Callable[[ToolContext, dict[str, Any]], str]) -> Any:
        _REGISTRY[name] = Tool(ToolSpec(name, description, _schema(properties, required)),
                               handler)
        return handler
    return register


def tool_specs() -> list[ToolSpec]:
    return [t.spec for t in _REGISTRY.values()]


# --- files: every access goes through mounts.workspace_fs ------------------------------------


def _path(relative: str) -> str:
    """The model's path, checked lexically; `.git` is refused (the repository is not the
    model's to edit). workspace_fs does the rest, on descriptors."""
    if relative.startswith("/"):
        raise ToolError(f"{relative!r} is absolute; paths are relative to the project root.")
    if ".." in relative.split("/"):
        raise ToolError(f"{relative!r} contains '..'; paths must stay inside the project.")
    path = workspace_fs.clean(relative)
    if path.split("/", 1)[0] == ".git":
        raise ToolError("The .git directory is managed by the agent; it cannot be changed.")
    return path


def cap(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [truncated: {len(text) - limit} more characters]"


def _hidden(relative: str) -> bool:
    """JuiceFS's virtual files at the root of a `files` workspace are never the project's."""
    return relative in workspace_fs.JUICEFS_VIRTUAL


def _label(name: str, kind: str) -> str:
    """ls -F style: `dir/`, `link@` (a symlink is shown, never followed), `fifo|`."""
    return name + {"dir": "/", "symlink": "@", "other": "|"}.get(kind, "")


@tool("list_directory", "List the entries of a directory of the project (directories end "
      "in /, symlinks in @; symlinks are not followed).",
      {"path": {**PATH, "default": "."}}, [])
def list_directory(context: ToolContext, args: dict[str, Any]) -> str:
    path = _path(args.get("path", ".") or ".")
    lines = [_label(entry.name, entry.type)
             for entry in workspace_fs.entries(context.workspace, path)
             if entry.name not in SKIPPED_DIRS and not _hidden(f"{path}/{entry.name}".lstrip("/"))]
    return "\n".join(lines[:MAX_LIST_ENTRIES]) or "(empty directory)"


@tool("read_file", "Read a text file of the project.", {"path": PATH}, ["path"])
def read_file(context: ToolContext, args: dict[str, Any]) -> str:
    data = workspace_fs.read(context.workspace, _path(args["path"]), limit=MAX_READ_BYTES)
    return cap(data.decode("utf-8", "replace"))


def _write(context: ToolContext, path: str, content: str) -> None:
    written = workspace_fs.write(context.workspace, path, [content.encode("utf-8")])
    assert written is not None
    context.changed.append(path)
    context.on_file_changed(path, "created" if written.created else "modified")


@tool("write_file", "Create or overwrite a file with the given content.",
      {"path": PATH, "content": {"type": "string"}}, ["path", "content"])
def write_file(context: ToolContext, args: dict[str, Any]) -> str:
    _write(context, _path(args["path"]), args["content"])
    return f"Wrote {len(args['content'].encode())} bytes to {args['path']}."


@tool("edit_file", "Replace one exact occurrence of `search` with `replace` in a file.",
      {"path": PATH, "search": {"type": "string", "minLength": 1}, "replace": {"type": "string"}},
      ["path", "search", "replace"])
def edit_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = _path(args["path"])
    try:
        data = workspace_fs.read(context.workspace, path, limit=MAX_EDIT_BYTES + 1)
    except workspace_fs.PathNotFound:
        raise ToolError(f"{args['path']!r} does not exist; use write_file to create it.") from None
    if len(data) > MAX_EDIT_BYTES:
        raise ToolError(f"{args['path']!r} is larger than {MAX_EDIT_BYTES} bytes; "
                        "edit it with a command instead.")
    text = data.decode("utf-8", errors="replace")
    count = text.count(args["search"])
    if count == 0:
        raise ToolError(f"The search text was not found in {args['path']}; read the file and "
                        "copy the exact text to replace.")
    if count > 1:
        raise ToolError(f"The search text occurs {count} times in {args['path']}; include more "
                        "surrounding lines so that it matches exactly once.")
    _write(context, path, text.replace(args["search"], args["replace"], 1))
    return f"Edited {args['path']}."


@tool("delete_file", "Delete a file (or a symlink, not what it points to) of the project.",
      {"path": PATH}, ["path"])
def delete_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = _path(args["path"])
    try:
        workspace_fs.remove(context.workspace, path, directories=False)
    except (workspace_fs.PathNotFound, workspace_fs.NotAFile):
        raise ToolError(f"{args['path']!r} is not a file.") from None
    context.changed.append(path)
    context.on_file_changed(path, "deleted")
    return f"Deleted {args['path']}."


@tool("find_files", "Find files whose project-relative path matches a glob (e.g. src/**/*.tsx); "
      "symlinks are listed with a trailing @.",
      {"pattern": {"type": "string", "minLength": 1}}, ["pattern"])
def find_files(context: ToolContext, args: dict[str, Any]) -> str:
    pattern, matches = args["pattern"], []
    for relative, kind in workspace_fs.walk(context.workspace, skip=SKIPPED_DIRS):
        if kind == "dir" or _hidden(relative):
            continue
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative.rsplit("/", 1)[-1],
                                                                 pattern):
            matches.append(_label(relative, kind))
            if len(matches) >= MAX_LIST_ENTRIES:
                break
    return cap("\n".join(matches)) or "(no files match)"


@tool("grep", "Search the project's files for a regular expression; prints path:line: text.",
      {"pattern": {"type": "string", "minLength": 1}, "path": {**PATH, "default": "."}},
      ["pattern"])
def grep(context: ToolContext, args: dict[str, Any]) -> str:
    try:
        regex = re.compile(args["pattern"])
    except re.error as error:
        raise ToolError(f"The pattern is not a valid regular expression: {error}") from None
    hits: list[str] = []
    files = workspace_fs.texts(context.workspace, _path(args.get("path", ".") or "."),
                               skip=SKIPPED_DIRS, limit=MAX_GREP_FILE_BYTES)
    for relative, data in files:
        if _hidden(relative):
            continue
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        hits.extend(f"{relative}:{n}: {line[:300]}"
                    for n, line in enumerate(lines, 1) if regex.search(line))
        if len(hits) >= MAX_LIST_ENTRIES:
            break
    return cap("\n".join(hits[:MAX_LIST_ENTRIES])) or "(no matches)"


# --- commands, packages, previews, integrations -------------------------------------------


def command_run(context: ToolContext, command: str, timeout: int) -> dict[str, Any]:
    """Run a shell command in the workspace, in the bucket's exec sandbox (as its user); each
    stream is cut at EXEC_OUTPUT_MAX_BYTES, like POST /exec (the result is capped anyway)."""
    spec = CommandSpec(
        bucket=context.bucket, workspace=context.workspace,
        argv=command_argvs.command_argv(command), cwd="", env=command_argvs.command_env({}),
        timeout=timeout, stdin=None)

    async def collect() -> commands.Collected:
        execution = await commands.exec_start(spec=spec)
        return await commands.exec_collect(execution=execution)

    collected = async_to_sync(collect)()
    return {"exit_code": collected.exit.get("exit_code"),
            "stdout": bytes(collected.stdout).decode("utf-8", "replace"),
            "stderr": bytes(collected.stderr).decode("utf-8", "replace"),
            "timed_out": bool(collected.exit.get("timed_out"))}


def _command_report(outcome: dict[str, Any]) -> str:
    half = MAX_RESULT_CHARS // 2
    status = "timed out" if outcome.get("timed_out") else f"exit code {outcome.get('exit_code')}"
    return (f"{status}\n--- stdout ---\n{cap(outcome.get('stdout') or '', half)}"
            f"\n--- stderr ---\n{cap(outcome.get('stderr') or '', half)}")


@tool("run_command", "Run a shell command in the project root (sandboxed, with a timeout).",
      {"command": {"type": "string", "minLength": 1},
       "timeout": {"type": "integer", "minimum": 1, "maximum": COMMAND_TIMEOUT_MAX}},
      ["command"])
def run_command(context: ToolContext, args: dict[str, Any]) -> str:
    outcome = command_run(context, args["command"], args.get("timeout", COMMAND_TIMEOUT_DEFAULT))
    return _command_report(outcome)


PACKAGE_NAME = r"^(@[a-z0-9._~-]+/)?[a-zA-Z0-9._~-]+(@[^\s]+)?$"
PACKAGES = {"type": "array", "minItems": 1, "maxItems": 50,
            "items": {"type": "string", "pattern": PACKAGE_NAME}}


@tool("install_packages", "Install npm packages into the project (package.json is updated).",
      {"packages": PACKAGES, "dev": {"type": "boolean"}}, ["packages"])
def install_packages(context: ToolContext, args: dict[str, Any]) -> str:
    command = system.npm_argv("install", args["packages"], dev=args.get("dev", False))
    outcome = command_run(context, command, COMMAND_TIMEOUT_MAX)
    context.on_file_changed("package.json", "modified")
    return _command_report(outcome)


@tool("remove_packages", "Remove npm packages from the project.", {"packages": PACKAGES},
      ["packages"])
def remove_packages(context: ToolContext, args: dict[str, Any]) -> str:
    outcome = command_run(context, system.npm_argv("uninstall", args["packages"]),
                          COMMAND_TIMEOUT_MAX)
    context.on_file_changed("package.json", "modified")
    return _command_report(outcome)


@tool("start_preview", "Start (or restart) the app's preview server.",
      {"command": {"type": "string"}}, [])
def start_preview(context: ToolContext, args: dict[str, Any]) -> str:
    preview = previews.preview_start(bucket=context.bucket, command=args.get("command") or None)
    return json.dumps({"status": preview.status, "port": preview.port})


@tool("check_preview", "Report the preview's status and the tail of its log.", {}, [])
def check_preview(context: ToolContext, args: dict[str, Any]) -> str:
    preview = previews.preview_get(bucket=context.bucket)
    return json.dumps({"status": preview.status, "port": preview.port,
                       "exit_code": preview.exit_code})


@tool("add_integration", "Install an integration (see GET /integrations) into the project.",
      {"key": {"type": "string", "minLength": 1}, "options": {"type": "object"}}, ["key"])
def add_integration(context: ToolContext, args: dict[str, Any]) -> str:
    if context.on_integration is None:
        raise ToolError("Integrations cannot be installed from here.")
    return context.on_integration(args["key"], args.get("options") or {})


@tool("done", "Call when the task is complete, with a one-line summary of the changes.",
      {"summary": {"type": "string"}}, [])
def done(context: ToolContext, args: dict[str, Any]) -> str:
    context.done = True
    context.summary = args.get("summary", "")
    return "Finished."


def tool_execute(context: ToolContext, call: ToolCall) -> ToolResult:
    """Validate and run one call; every failure is an error result, never an exception."""
    def error(message: str) -> ToolResult:
        return ToolResult(call.id, call.name, cap(message), is_error=True)

    entry = _REGISTRY.get(call.name)
    if entry is None:
        return error(f"Unknown tool {call.name!r}; available: {', '.join(_REGISTRY)}.")
    if call.arguments is None:
        return error(f"The arguments are not valid JSON: {call.raw_arguments[:500]!r}")
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(entry.spec.parameters).iter_errors(call.arguments))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
        return error(f"Invalid arguments for {call.name} ({where}): {problem.message}")
    try:
        return ToolResult(call.id, call.name, cap(entry.handler(context, call.arguments)))
    except ToolError as failure:
        return error(str(failure))
    except OSError as failure:
        return error(f"{call.name} failed: {failure.strerror or failure}")
    except APIError as failure:  # a service refused (no preview, not mounted, ...)
        return error(f"{call.name} failed: {failure.detail}")
    except Exception as failure:  # the run goes on; the model hears what broke
        logger.exception("tool %s crashed", call.name)
        return error(f"{call.name} failed unexpectedly: {failure}")
