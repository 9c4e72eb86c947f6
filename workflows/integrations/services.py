"""Installing integrations: files, package.json, .env, a status row and a version.

An install touches only the files it names; their previous bytes are kept in memory and put
back when anything fails, so a failed install leaves the workspace as it was (and never
disturbs an in-progress run's other changes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from rest_framework import status

from weldr_agent.errors import APIError
from workflows import gitrepo
from workflows.integrations.registry import REGISTRY, IntegrationSpec
from workflows.models import Branch, Integration

ENV_FILE = ".env"


class UnknownIntegration(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "unknown_integration"
    default_detail = "No integration with this key; see GET /integrations."


class InvalidIntegrationOptions(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_options"
    default_detail = "The integration's options are invalid."


class IntegrationFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "integration_failed"
    default_detail = "Installing the integration failed; the workspace was left as it was."


def integrations_describe() -> list[dict[str, Any]]:
    return [spec.describe() for spec in REGISTRY.values()]


def _spec(key: str, options: dict[str, Any]) -> IntegrationSpec:
    spec = REGISTRY.get(key)
    if spec is None:
        raise UnknownIntegration(f"No integration {key!r}; known: {', '.join(REGISTRY)}.")
    problem = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(spec.options_schema).iter_errors(options))
    if problem is not None:
        raise InvalidIntegrationOptions(f"Options of {key}: {problem.message}")
    return spec


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
    """Append the spec's variables that are absent; existing values (and secrets) are kept."""
    present = {line.split("=", 1)[0].strip() for line in text.splitlines()
               if "=" in line and not line.lstrip().startswith("#")}
    lines = [f"{name}={make(options)}" for name, make in spec.env.items() if name not in present]
    if not lines:
        return text
    prefix = text if not text or text.endswith("\n") else text + "\n"
    return prefix + "\n".join(lines) + "\n"


def _planned_writes(workspace: Path, spec: IntegrationSpec,
                    options: dict[str, Any]) -> dict[str, str]:
    writes = {path: body for path, body in spec.files.items() if not (workspace / path).exists()}
    package = workspace / "package.json"
    current = json.loads(package.read_text()) if package.exists() else {}
    merged = package_json_merge(current, spec)
    if merged != current:
        writes["package.json"] = json.dumps(merged, indent=2) + "\n"
    env = workspace / ENV_FILE
    if spec.env:
        before = env.read_text() if env.exists() else ""
        after = env_merge(before, spec, options)
        if after != before:
            writes[ENV_FILE] = after
    return writes


class _Undo:
    """The previous state of every file an install writes, to put back on failure."""

    def __init__(self) -> None:
        self.saved: dict[Path, bytes | None] = {}
        self.created_dirs: list[Path] = []

    def write(self, path: Path, body: str) -> None:
        self.saved.setdefault(path, path.read_bytes() if path.is_file() else None)
        missing = [p for p in reversed(path.parents) if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.created_dirs.extend(missing)
        path.write_text(body)

    def restore(self) -> None:
        for path, before in self.saved.items():
            if before is None:
                if path.is_file() or path.is_symlink():
                    path.unlink()
            else:
                path.write_bytes(before)
        for directory in reversed(self.created_dirs):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


def integration_apply(*, branch: Branch, key: str, options: dict[str, Any],
                      commit: bool = True) -> Integration:
    """Install one integration into the branch's workspace (idempotent)."""
    from workflows.services import branch_workspace, version_record

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
    undo = _Undo()
    try:
        for relative, body in _planned_writes(workspace, spec, options).items():
            undo.write(workspace / relative, body)
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
    from workflows.services import branch_exclusive

    with branch_exclusive(branch=branch, purpose="install integrations"):
        return [integration_apply(branch=branch, key=item["key"],
                                  options=item.get("options") or {}) for item in items]
