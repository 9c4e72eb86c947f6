"""The tools the model gets: each validated, confined to the workspace, its result size-capped.

A tool never raises into the engine: a bad argument, a path outside the workspace or a failed
command becomes an error result the model reads and can correct.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from asgiref.sync import async_to_sync

from previews import exec as sandbox_exec
from previews import exec_spec
from weldr_agent.errors import APIError
from workflows import system
from workflows.providers.base import ToolCall, ToolResult, ToolSpec

logger = logging.getLogger("weldr.workflows.tools")

MAX_RESULT_CHARS = 20_000
MAX_READ_BYTES = 512 * 1024
MAX_LIST_ENTRIES = 500
JUICEFS_VIRTUAL = {".stats", ".config", ".accesslog"}
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


# --- confinement -------------------------------------------------------------------------


def confine(workspace: Path, relative: str) -> Path:
    """The absolute path of `relative` inside the workspace; refuse anything that leaves it."""
    if "\0" in relative:
        raise ToolError("The path contains a NUL byte.")
    candidate = Path(relative)
    if candidate.is_absolute():
        raise ToolError(f"{relative!r} is absolute; paths are relative to the project root.")
    if ".." in candidate.parts:
        raise ToolError(f"{relative!r} contains '..'; paths must stay inside the project.")
    if candidate.parts and candidate.parts[0] == ".git":
        raise ToolError("The .git directory is managed by the agent; it cannot be changed.")
    root = workspace.resolve()
    # resolve() follows symlinks: a link pointing outside the workspace lands outside `root`.
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise ToolError(f"{relative!r} resolves outside the project (a symlink out?).")
    return resolved


def _relative(context: ToolContext, path: Path) -> str:
    return str(path.relative_to(context.workspace.resolve())) or "."


def cap(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… [truncated: {len(text) - limit} more characters]"


# --- files -------------------------------------------------------------------------------


@tool("list_directory", "List the entries of a directory of the project.",
      {"path": {**PATH, "default": "."}}, [])
def list_directory(context: ToolContext, args: dict[str, Any]) -> str:
    directory = confine(context.workspace, args.get("path", ".") or ".")
    if not directory.is_dir():
        raise ToolError(f"{args.get('path')!r} is not a directory.")
    lines = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name)[:MAX_LIST_ENTRIES]:
        if entry.name in SKIPPED_DIRS or entry.name in JUICEFS_VIRTUAL:
            continue
        kind = "dir" if entry.is_dir() and not entry.is_symlink() else "file"
        lines.append(f"{entry.name}/" if kind == "dir" else entry.name)
    return "\n".join(lines) or "(empty directory)"


@tool("read_file", "Read a text file of the project.", {"path": PATH}, ["path"])
def read_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = confine(context.workspace, args["path"])
    if not path.is_file():
        raise ToolError(f"{args['path']!r} does not exist or is not a file.")
    with open(path, "rb") as handle:
        data = handle.read(MAX_READ_BYTES + 1)
    text = data[:MAX_READ_BYTES].decode("utf-8", "replace")
    return cap(text)


def _owned_like_root(context: ToolContext, paths: list[Path]) -> None:
    """New files belong to the workspace root's owner (the sandbox user), not to the agent."""
    if os.geteuid() != 0:
        return
    owner = context.workspace.stat()
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def _write(context: ToolContext, path: Path, content: str) -> None:
    change = "modified" if path.exists() else "created"
    missing = [p for p in reversed(path.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    _owned_like_root(context, [*missing, path])
    relative = _relative(context, path)
    context.changed.append(relative)
    context.on_file_changed(relative, change)


@tool("write_file", "Create or overwrite a file with the given content.",
      {"path": PATH, "content": {"type": "string"}}, ["path", "content"])
def write_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = confine(context.workspace, args["path"])
    if path.is_dir():
        raise ToolError(f"{args['path']!r} is a directory.")
    _write(context, path, args["content"])
    return f"Wrote {len(args['content'].encode())} bytes to {args['path']}."


@tool("edit_file", "Replace one exact occurrence of `search` with `replace` in a file.",
      {"path": PATH, "search": {"type": "string", "minLength": 1}, "replace": {"type": "string"}},
      ["path", "search", "replace"])
def edit_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = confine(context.workspace, args["path"])
    if not path.is_file():
        raise ToolError(f"{args['path']!r} does not exist; use write_file to create it.")
    text = path.read_text(encoding="utf-8", errors="replace")
    count = text.count(args["search"])
    if count == 0:
        raise ToolError(f"The search text was not found in {args['path']}; read the file and "
                        "copy the exact text to replace.")
    if count > 1:
        raise ToolError(f"The search text occurs {count} times in {args['path']}; include more "
                        "surrounding lines so that it matches exactly once.")
    _write(context, path, text.replace(args["search"], args["replace"], 1))
    return f"Edited {args['path']}."


@tool("delete_file", "Delete a file of the project.", {"path": PATH}, ["path"])
def delete_file(context: ToolContext, args: dict[str, Any]) -> str:
    path = confine(context.workspace, args["path"])
    if path.is_dir() or not path.exists():
        raise ToolError(f"{args['path']!r} is not a file.")
    path.unlink()
    relative = _relative(context, path)
    context.changed.append(relative)
    context.on_file_changed(relative, "deleted")
    return f"Deleted {args['path']}."


def is_agent_marker(directory: Path, name: str, root: Path) -> bool:
    """A local branch directory's marker files (`.weldr-*` at its root) are the agent's."""
    return directory == root and name.startswith(".weldr-")


def _walk(root: Path) -> list[Path]:
    files: list[Path] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        # .accesslog blocks on read: JuiceFS's virtual files are never the project's.
        files.extend(Path(directory) / name for name in sorted(filenames)
                     if name not in JUICEFS_VIRTUAL and not is_agent_marker(Path(directory),
                                                                            name, root))
    return files


@tool("find_files", "Find files whose project-relative path matches a glob (e.g. src/**/*.tsx).",
      {"pattern": {"type": "string", "minLength": 1}}, ["pattern"])
def find_files(context: ToolContext, args: dict[str, Any]) -> str:
    root = context.workspace.resolve()
    pattern = args["pattern"]
    matches = [str(p.relative_to(root)) for p in _walk(root)
               if fnmatch.fnmatch(str(p.relative_to(root)), pattern)
               or fnmatch.fnmatch(p.name, pattern)]
    return cap("\n".join(matches[:MAX_LIST_ENTRIES])) or "(no files match)"


@tool("grep", "Search the project's files for a regular expression; prints path:line: text.",
      {"pattern": {"type": "string", "minLength": 1}, "path": {**PATH, "default": "."}},
      ["pattern"])
def grep(context: ToolContext, args: dict[str, Any]) -> str:
    try:
        regex = re.compile(args["pattern"])
    except re.error as error:
        raise ToolError(f"The pattern is not a valid regular expression: {error}") from None
    base = confine(context.workspace, args.get("path", ".") or ".")
    root = context.workspace.resolve()
    hits: list[str] = []
    for path in ([base] if base.is_file() else _walk(base)):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        hits.extend(f"{path.relative_to(root)}:{n}: {line[:300]}"
                    for n, line in enumerate(lines, 1) if regex.search(line))
        if len(hits) >= MAX_LIST_ENTRIES:
            break
    return cap("\n".join(hits[:MAX_LIST_ENTRIES])) or "(no matches)"


# --- commands, packages, previews, integrations -------------------------------------------


def command_run(context: ToolContext, command: str, timeout: int) -> dict[str, Any]:
    """Run a shell command in the workspace, in the bucket's exec sandbox (as its user); each
    stream is cut at EXEC_OUTPUT_MAX_BYTES, like POST /exec (the result is capped anyway)."""
    spec = sandbox_exec.CommandSpec(
        bucket=context.bucket, workspace=context.workspace,
        argv=exec_spec.command_argv(command), cwd="", env=exec_spec.command_env({}),
        timeout=timeout, stdin=None)

    async def collect() -> sandbox_exec.Collected:
        execution = await sandbox_exec.exec_start(spec=spec)
        return await sandbox_exec.exec_collect(execution=execution)

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


def _previews() -> Any:
    try:
        from previews import services
    except ImportError:
        raise ToolError("Previews are not available on this agent.") from None
    return services


@tool("start_preview", "Start (or restart) the app's preview server.",
      {"command": {"type": "string"}}, [])
def start_preview(context: ToolContext, args: dict[str, Any]) -> str:
    services = _previews()
    if not hasattr(services, "preview_start"):
        raise ToolError("Previews are not available on this agent.")
    preview = services.preview_start(bucket=context.bucket, command=args.get("command") or None)
    return json.dumps({"status": getattr(preview, "status", None),
                       "port": getattr(preview, "port", None)})


@tool("check_preview", "Report the preview's status and the tail of its log.", {}, [])
def check_preview(context: ToolContext, args: dict[str, Any]) -> str:
    services = _previews()
    if not hasattr(services, "preview_get"):
        raise ToolError("Previews are not available on this agent.")
    preview = services.preview_get(bucket=context.bucket)
    return json.dumps({"status": getattr(preview, "status", None),
                       "port": getattr(preview, "port", None),
                       "exit_code": getattr(preview, "exit_code", None)})


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
