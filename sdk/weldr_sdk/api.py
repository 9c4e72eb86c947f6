"""The API's plain request/response operations, shared by the sync and the async client.

Each method returns `self._call(...)`: the sync client runs it and returns the value, the async
client returns a coroutine. Streaming operations (exec output, logs, events, large files) differ
between the two and live in `client.py` and `aio.py`. `@uses(...)` names the operation(s) of
`operations.OPERATIONS` a method calls; tests/sdk checks every operation has one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from weldr_sdk.models import (
    Egress,
    ExecResult,
    ExecStatus,
    Mount,
    Preview,
    PreviewToken,
    Snapshot,
)

Parse = Callable[[httpx.Response], Any]


def uses(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method.operations = names  # type: ignore[attr-defined]
        return method
    return mark


def json_body(response: httpx.Response) -> Any:
    return response.json() if response.content else None


def key(name: str) -> Parse:
    return lambda response: response.json()[name]


def body_bytes(response: httpx.Response) -> bytes:
    return response.content


def no_body(response: httpx.Response) -> None:
    return None


def exec_body(bucket: str, command: str | list[str], *, cwd: str | None, env: dict | None,
              timeout: float | None, stdin: str | None, background: bool = False) -> dict:
    body: dict[str, Any] = {"bucket": bucket, "command": command}
    for name, value in (("cwd", cwd), ("env", env), ("timeout", timeout), ("stdin", stdin)):
        if value is not None:
            body[name] = value
    if background:
        body["background"] = True
    return body


class Namespace:
    def __init__(self, client: Any) -> None:
        self._client = client

    def _call(self, name: str, **kwargs: Any) -> Any:
        return self._client._call(name, **kwargs)


class MountsAPI(Namespace):
    @uses("mounts.list")
    def list(self) -> list[Mount]:
        return self._call("mounts.list", parse=key("mounts"))

    @uses("mounts.get")
    def get(self, bucket: str) -> Mount:
        return self._call("mounts.get", path={"bucket": bucket})

    @uses("mounts.create")
    def mount(self, bucket: str, *, layout: str | None = None, force: bool = False) -> Mount:
        body: dict[str, Any] = {"bucket": bucket, "force": force}
        if layout:
            body["layout"] = layout
        return self._call("mounts.create", json=body, timeout=max(self._client.timeout, 300))

    @uses("mounts.unmount")
    def unmount(self, bucket: str, *, force: bool = False) -> dict:
        return self._call("mounts.unmount", json={"bucket": bucket, "force": force},
                          timeout=max(self._client.timeout, 300))

    @uses("mounts.sync")
    def sync(self, bucket: str) -> dict:
        return self._call("mounts.sync", path={"bucket": bucket},
                          timeout=max(self._client.timeout, 600))

    @uses("mounts.egress.get")
    def egress(self, bucket: str) -> Egress:
        return self._call("mounts.egress.get", path={"bucket": bucket})

    @uses("mounts.egress.set")
    def set_egress(self, bucket: str, *, mode: str, allow: list[str] | None = None,
                   deny: list[str] | None = None) -> Egress:
        return self._call("mounts.egress.set", path={"bucket": bucket},
                          json={"mode": mode, "allow": allow or [], "deny": deny or []})

    @uses("mounts.egress.reset")
    def reset_egress(self, bucket: str) -> Egress:
        return self._call("mounts.egress.reset", path={"bucket": bucket})


class FilesAPI(Namespace):
    @uses("files.list")
    def list(self, bucket: str, path: str = ".") -> list[dict]:
        return self._call("files.list", path={"bucket": bucket}, params={"path": path},
                          parse=key("entries"))

    @uses("files.read")
    def read(self, bucket: str, path: str) -> bytes:
        """The whole file in memory; `download`/`iter_bytes` stream a large one."""
        return self._call("files.read", path={"bucket": bucket}, params={"path": path},
                          parse=body_bytes)

    @uses("files.write")
    def write(self, bucket: str, path: str, data: bytes | str) -> dict:
        """Write a whole file (atomic, parents created); `upload` streams a large one."""
        content = data.encode() if isinstance(data, str) else data
        return self._call("files.write", path={"bucket": bucket}, params={"path": path},
                          content=content,
                          headers={"Content-Type": "application/octet-stream"})

    @uses("files.delete")
    def delete(self, bucket: str, path: str, *, recursive: bool = False) -> None:
        return self._call("files.delete", path={"bucket": bucket},
                          params={"path": path, "recursive": str(recursive).lower()},
                          parse=no_body)


class CommandsAPI(Namespace):
    @uses("exec")
    def run(self, bucket: str, command: str | list[str], *, cwd: str | None = None,
            env: dict[str, str] | None = None, timeout: float | None = None,
            stdin: str | None = None) -> ExecResult:
        """Run a command to its end; `command` is a `sh -c` string or an argv list."""
        body = exec_body(bucket, command, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
        wait = max(self._client.timeout, (timeout or 60) + 30)
        return self._call("exec", json=body, timeout=wait)

    @uses("exec")
    def start(self, bucket: str, command: str | list[str], *, cwd: str | None = None,
              env: dict[str, str] | None = None, timeout: float | None = None,
              stdin: str | None = None) -> Any:
        """Start a background command: a handle with `wait()`, `logs()`, `kill()`."""
        body = exec_body(bucket, command, cwd=cwd, env=env, timeout=timeout, stdin=stdin,
                         background=True)
        return self._call("exec", json=body,
                          parse=lambda r: self._client._command(r.json()["id"]))

    @uses("exec.get")
    def get(self, exec_id: str) -> ExecStatus:
        return self._call("exec.get", path={"exec_id": exec_id})

    @uses("exec.kill")
    def kill(self, exec_id: str) -> None:
        return self._call("exec.kill", path={"exec_id": exec_id}, parse=no_body)


class SnapshotsAPI(Namespace):
    """Snapshots of a bucket's workspace (the `image` layout), kept in the bucket's volume."""

    @uses("snapshots.list")
    def list(self, bucket: str, *, sizes: bool = False) -> list[Snapshot]:
        """`sizes=True` measures each snapshot's own data now (slower)."""
        return self._call("snapshots.list", path={"bucket": bucket},
                          params={"sizes": "1"} if sizes else None, parse=key("snapshots"))

    @uses("snapshots.create")
    def create(self, bucket: str, *, name: str = "", note: str = "") -> Snapshot:
        return self._call("snapshots.create", path={"bucket": bucket},
                          json={"name": name, "note": note})

    @uses("snapshots.delete")
    def delete(self, bucket: str, snapshot_id: str) -> None:
        return self._call("snapshots.delete", path={"bucket": bucket, "snapshot_id": snapshot_id},
                          parse=no_body)

    @uses("snapshots.restore")
    def restore(self, bucket: str, snapshot_id: str) -> dict:
        """The workspace back to the snapshot; the report names the previews and commands that
        were stopped first."""
        return self._call("snapshots.restore",
                          path={"bucket": bucket, "snapshot_id": snapshot_id}, json={},
                          timeout=max(self._client.timeout, 300))

    @uses("snapshots.fork")
    def fork(self, bucket: str, snapshot_id: str, name: str) -> Mount:
        """A new writable workspace `name` from the snapshot, addressed like a bucket."""
        return self._call("snapshots.fork", path={"bucket": bucket, "snapshot_id": snapshot_id},
                          json={"name": name}, timeout=max(self._client.timeout, 300))

    @uses("mounts.promote")
    def promote(self, fork: str) -> Mount:
        """Make a fork its bucket's main workspace."""
        return self._call("mounts.promote", path={"bucket": fork}, json={},
                          timeout=max(self._client.timeout, 300))

    @uses("snapshots.policy.get")
    def policy(self, bucket: str) -> dict:
        return self._call("snapshots.policy.get", path={"bucket": bucket})

    @uses("snapshots.policy.set")
    def set_policy(self, bucket: str, *, keep: int, max_age_days: int) -> dict:
        """Replace the retention policy (0: no limit) and apply it now; `deleted` names the
        snapshots it removed."""
        return self._call("snapshots.policy.set", path={"bucket": bucket},
                          json={"keep": keep, "max_age_days": max_age_days})


class PreviewsAPI(Namespace):
    @uses("previews.list")
    def list(self) -> list[Preview]:
        return self._call("previews.list", parse=key("previews"))

    @uses("previews.get")
    def get(self, bucket: str) -> Preview:
        return self._call("previews.get", path={"bucket": bucket})

    @uses("previews.start")
    def start(self, bucket: str, *, port: int | None = None, command: str | None = None,
              env: dict[str, str] | None = None, access: str | None = None) -> Preview:
        """`access`: "public" or "token" (default: the agent's PREVIEW_ACCESS)."""
        body: dict[str, Any] = {"bucket": bucket}
        for name, value in (("port", port), ("command", command), ("env", env),
                            ("access", access)):
            if value is not None:
                body[name] = value
        return self._call("previews.start", json=body)

    @uses("previews.stop")
    def stop(self, bucket: str) -> Preview:
        return self._call("previews.stop", json={"bucket": bucket})

    @uses("previews.tokens.create")
    def token(self, bucket: str, *, port: int | None = None, ttl_seconds: int | None = None,
              one_shot: bool = False) -> PreviewToken:
        """An access token for a private preview; its `url` opens the preview in a browser."""
        body: dict[str, Any] = {"one_shot": one_shot}
        for name, value in (("port", port), ("ttl_seconds", ttl_seconds)):
            if value is not None:
                body[name] = value
        return self._call("previews.tokens.create", path={"bucket": bucket}, json=body)

    @uses("previews.logs")
    def logs(self, bucket: str, *, tail: int = 200) -> str:
        """The last `tail` lines; `follow_logs` follows them live."""
        return self._call("previews.logs", path={"bucket": bucket}, params={"tail": tail},
                          headers={"Accept": "text/plain"}, parse=lambda r: r.text)


class WorkflowsAPI(Namespace):
    @uses("projects.list")
    def projects(self) -> list[dict]:
        return self._call("projects.list", parse=key("projects"))

    @uses("projects.create")
    def create_project(self, name: str) -> dict:
        return self._call("projects.create", json={"name": name})

    @uses("branches.list")
    def branches(self, project_id: str) -> list[dict]:
        return self._call("branches.list", path={"project_id": project_id},
                          parse=key("branches"))

    @uses("branches.create")
    def create_branch(self, project_id: str, *, name: str, bucket: str) -> dict:
        return self._call("branches.create", path={"project_id": project_id},
                          json={"name": name, "bucket": bucket})

    @uses("trigger")
    def trigger(self, project_id: str, branch_id: str, text: str, *,
                model: str | None = None) -> Any:
        """Start a run: a handle whose `events()` follow it (resuming across disconnects)."""
        body: dict[str, Any] = {"project_id": project_id, "branch_id": branch_id,
                                "message": {"content": [{"type": "text", "text": text}]}}
        if model:
            body["model"] = model
        return self._call("trigger", json=body, parse=lambda r: self._client._run(
            r.json()["run_id"], project_id, branch_id))

    @uses("runs.list")
    def runs(self, *, project_id: str | None = None, branch_id: str | None = None) -> list:
        params = {k: v for k, v in (("project_id", project_id), ("branch_id", branch_id)) if v}
        return self._call("runs.list", params=params, parse=key("runs"))

    @uses("runs.get")
    def run(self, run_id: str) -> dict:
        return self._call("runs.get", path={"run_id": run_id})

    @uses("revert")
    def revert(self, project_id: str, branch_id: str, version_id: str) -> dict:
        return self._call("revert", json={"project_id": project_id, "branch_id": branch_id,
                                          "version_id": version_id})

    @uses("integrations.list")
    def integrations(self) -> list[dict]:
        return self._call("integrations.list", parse=key("integrations"))

    @uses("integrations.install")
    def install_integrations(self, project_id: str, branch_id: str,
                             integrations: list[dict], *,
                             trigger_workflow: bool | None = None) -> dict:
        body: dict[str, Any] = {"project_id": project_id, "branch_id": branch_id,
                                "integrations": integrations}
        if trigger_workflow is not None:
            body["trigger_workflow"] = trigger_workflow
        return self._call("integrations.install", json=body)


class RootAPI:
    """Health and identity, on the client itself."""

    @uses("health")
    def health(self) -> dict:
        # 503 carries the same body (which dependency fails): return it rather than raise.
        return self._call("health", ok=(200, 503))  # type: ignore[attr-defined]

    @uses("health.live")
    def live(self) -> dict:
        return self._call("health.live")  # type: ignore[attr-defined]

    @uses("whoami")
    def whoami(self) -> dict:
        return self._call("whoami")  # type: ignore[attr-defined]


def covered_operations(*classes: type) -> dict[str, list[str]]:
    """Operation name → the methods that call it, over `classes` and their bases."""
    found: dict[str, list[str]] = {}
    for cls in classes:
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                for name in getattr(value, "operations", ()):
                    found.setdefault(name, []).append(f"{klass.__name__}.{attr}")
    return found
