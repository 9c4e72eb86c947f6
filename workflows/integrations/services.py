"""Installing integrations: files, package.json, .env, a status row and a version.

An install touches only the files it names; their previous bytes are kept in memory and put
back when anything fails, so a failed install leaves the workspace as it was (and never
disturbs an in-progress run's other changes). Every read and write goes through
mounts.workspace_fs: a symlink planted where an install writes (`.env`, package.json, a template
file) is refused or left alone, never followed; template files are created only where the name
is free, atomically.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import jsonschema

from mounts import workspace_fs
from weldr_agent.errors import APIError
from workflows import gitrepo
from workflows.branches import branch_exclusive, branch_workspace, version_record
from workflows.errors import IntegrationFailed, InvalidIntegrationOptions, UnknownIntegration
from workflows.integrations import dotenv
from workflows.integrations.registry import REGISTRY, IntegrationSpec
from workflows.models import Branch, Integration

logger = logging.getLogger("weldr.workflows.integrations")

ENV_FILE = ".env"


def integrations_describe() -> list[dict[str, Any]]:
    return [spec.describe() for spec in REGISTRY.values()]


# Above any real package.json or .env; a bigger one is not the app's and fails the install.
MAX_PACKAGE_JSON_BYTES = 1024 * 1024
MAX_ENV_BYTES = 256 * 1024
# Newlines, control characters and their Unicode cousins: never part of an option.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _spec(key: str, options: dict[str, Any]) -> IntegrationSpec:
    spec = REGISTRY.get(key)
    if spec is None:
        raise UnknownIntegration(f"No integration {key!r}; known: {', '.join(REGISTRY)}.")
    properties = spec.options_schema["properties"]
    for name, value in options.items() if isinstance(options, dict) else ():
        if name in properties:
            _option_check(key, name, value, properties[name])
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(spec.options_schema).iter_errors(options))
    if problem is not None:
        raise InvalidIntegrationOptions(f"Options of {key}: {problem.message}")
    return spec


def _option_check(key: str, name: str, value: Any, schema: dict[str, Any]) -> None:
    """The whole value matches its pattern (JSON Schema's search would let a trailing newline
    through) and holds no control character."""
    if not isinstance(value, str):
        return
    if CONTROL.search(value):
        raise InvalidIntegrationOptions(
            f"Options of {key}: `{name}` must not contain newlines or control characters.")
    if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
        raise InvalidIntegrationOptions(
            f"Options of {key}: `{name}` must be {schema.get('description', 'valid')}.")


def package_json_merge(current: dict[str, Any], spec: IntegrationSpec) -> dict[str, Any]:
    """Add the spec's dependencies and scripts; what the app already declares wins."""
    merged = dict(current)
    merged.setdefault("name", "app")
    merged.setdefault("private", True)
    merged.setdefault("type", "module")
    for section, additions in (("dependencies", spec.dependencies),
                               ("devDependencies", spec.dev_dependencies),
                               ("scripts", spec.scripts)):
        if additions:
            merged[section] = {**additions, **merged.get(section, {})}
    return merged


def env_merge(text: str, spec: IntegrationSpec, options: dict[str, Any]) -> str:
    """Append the spec's variables that are absent, through the dotenv serializer; existing
    values (and secrets) are kept."""
    present = dotenv.dotenv_names(text)
    lines = [dotenv.dotenv_line(name, make(options)) for name, make in spec.env.items()
             if name not in present]
    if not lines:
        return text
    prefix = text if not text or text.endswith("\n") else text + "\n"
    return prefix + "\n".join(lines) + "\n"


def _read(workspace: Path, path: str, limit: int) -> bytes | None:
    """A workspace file's bytes through workspace_fs (a symlink is refused), None if absent."""
    data = workspace_fs.read_if_present(workspace, path, limit=limit + 1)
    if data is not None and len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes.")
    return data


def _package_json(workspace: Path) -> tuple[bytes | None, dict[str, Any]]:
    raw = _read(workspace, "package.json", MAX_PACKAGE_JSON_BYTES)
    current = json.loads(raw) if raw is not None else {}
    if not isinstance(current, dict):
        raise ValueError("package.json is not a JSON object.")
    return raw, current


def _planned_edits(workspace: Path, spec: IntegrationSpec, options: dict[str, Any]
                   ) -> dict[str, tuple[bytes | None, bytes]]:
    """package.json and .env: path -> (bytes before, bytes after), only where they change."""
    edits: dict[str, tuple[bytes | None, bytes]] = {}
    raw, current = _package_json(workspace)
    merged = package_json_merge(current, spec)
    if merged != current:
        edits["package.json"] = (raw, (json.dumps(merged, indent=2) + "\n").encode())
    if spec.env:
        raw = _read(workspace, ENV_FILE, MAX_ENV_BYTES)
        before = raw.decode("utf-8") if raw is not None else ""
        after = env_merge(before, spec, options)
        if after != before:
            edits[ENV_FILE] = (raw, after.encode())
    return edits


class _Undo:
    """Every write of an install, through workspace_fs, and what to put back on failure."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.saved: dict[str, bytes | None] = {}
        self.made_dirs: list[str] = []

    def create(self, path: str, body: bytes) -> None:
        """Write `path` only where nothing has the name (atomically: no exists() check)."""
        written = workspace_fs.write(self.workspace, path, [body], only_if_absent=True)
        if written is not None:
            self.saved.setdefault(path, None)
            self.made_dirs.extend(written.made_dirs)

    def replace(self, path: str, before: bytes | None, body: bytes) -> None:
        self.saved.setdefault(path, before)
        written = workspace_fs.write(self.workspace, path, [body])
        assert written is not None
        self.made_dirs.extend(written.made_dirs)

    def restore(self) -> None:
        for path, before in reversed(self.saved.items()):
            try:
                if before is None:
                    workspace_fs.remove(self.workspace, path, directories=False)
                else:
                    workspace_fs.write(self.workspace, path, [before])
            except (APIError, OSError):
                logger.warning("could not put %s back after a failed install", path)
        for directory in reversed(self.made_dirs):
            try:
                workspace_fs.remove(self.workspace, directory)
            except (APIError, OSError):
                pass  # not empty any more: someone else's files are in it


def integration_apply(*, branch: Branch, key: str, options: dict[str, Any],
                      commit: bool = True) -> Integration:
    """Install one integration into the branch's workspace (idempotent)."""
    spec = _spec(key, options)
    missing = [r for r in spec.requires
               if not Integration.objects.filter(branch=branch, key=r,
                                                 status=Integration.Status.INSTALLED).exists()]
    if missing:
        raise InvalidIntegrationOptions(f"{key} needs {', '.join(missing)} installed first.")
    row, _ = Integration.objects.get_or_create(
        branch=branch, key=key,
        defaults={"project_id": branch.project_id, "category": spec.category, "options": options})
    workspace = branch_workspace(branch)
    repo = gitrepo.Repo(bucket=branch.bucket, workspace=workspace)
    gitrepo.repo_ensure(repo)
    undo = _Undo(workspace)
    try:
        edits = _planned_edits(workspace, spec, options)
        for relative, body in spec.files.items():
            undo.create(relative, body.encode())
        for relative, (before, after) in edits.items():
            undo.replace(relative, before, after)
        message = f"Install integration {spec.name}"
        commit_hash = gitrepo.commit_all(repo, message) if commit else None
    except Exception as error:
        undo.restore()
        row.status = Integration.Status.FAILED
        row.error = str(error)[:2000]
        row.save(update_fields=["status", "error", "updated_at"])
        raise IntegrationFailed(f"Installing {key} failed: {error}") from error
    row.status, row.error, row.options = Integration.Status.INSTALLED, "", options
    if commit_hash is not None:
        row.version = version_record(branch=branch, commit_hash=commit_hash,
                                     description=f"Install integration {spec.name}")
    row.save()
    return row


def integrations_install(*, branch: Branch, items: list[dict[str, Any]]) -> list[Integration]:
    """Install several integrations in order, holding the branch against concurrent runs."""
    with branch_exclusive(branch=branch, purpose="install integrations"):
        return [integration_apply(branch=branch, key=item["key"],
                                  options=item.get("options") or {}) for item in items]
