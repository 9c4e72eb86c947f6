"""Typed shapes of the API's JSON (docs/api.md). Responses are plain dicts typed by these
TypedDicts (keys the agent adds later pass through); stream items are small dataclasses."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict


class Mount(TypedDict, total=False):
    bucket: str
    path: str
    layout: Literal["image", "files"]
    status: str
    cache_size_mb: int
    buffer_size_mb: int
    mounted_at: str | None
    restored: bool
    synced_at: str | None
    error: str | None


class Egress(TypedDict, total=False):
    bucket: str
    source: Literal["default", "bucket"]
    mode: Literal["internet", "allowlist", "none"]
    allow: list[str]
    deny: list[str]
    pinned: dict[str, list[str]]
    operator_deny: list[str]
    updated_at: str | None


class FileEntry(TypedDict):
    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mtime: float


class FileWritten(TypedDict):
    path: str
    size: int


class ExecResult(TypedDict, total=False):
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_base64: str
    stderr_base64: str
    timed_out: bool
    truncated: bool
    duration_ms: int


class ExecStatus(TypedDict, total=False):
    id: str
    status: Literal["running", "exited", "killed", "timed_out"]
    exit_code: int | None


class Preview(TypedDict, total=False):
    bucket: str
    port: int
    status: Literal["starting", "running", "exited", "failed", "stopped"]
    access: Literal["public", "token"]
    command: str
    url: str
    started_at: str | None
    exit_code: int | None


class Snapshot(TypedDict, total=False):
    id: str
    name: str
    note: str
    kind: str
    created_at: str
    size_bytes: int | None


class PreviewToken(TypedDict, total=False):
    token: str
    expires_at: str
    url: str
    bucket: str
    port: int
    one_shot: bool


class Project(TypedDict, total=False):
    id: str
    name: str
    owner_id: str | None
    created_at: str


class Branch(TypedDict, total=False):
    id: str
    project_id: str
    name: str
    bucket: str
    created_at: str


class Run(TypedDict, total=False):
    id: str
    project_id: str
    branch_id: str
    status: str
    current_step: str | None
    model: str
    error: str | None
    versions: list[dict[str, Any]]


@dataclass(frozen=True)
class ServerSentEvent:
    """One event of an SSE stream."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        import json

        return json.loads(self.data) if self.data else {}


@dataclass(frozen=True)
class OutputChunk:
    """A piece of a command's output: `stream` is "stdout" or "stderr"; `data` the exact bytes
    (`text` is them decoded, invalid UTF-8 replaced)."""

    stream: Literal["stdout", "stderr"]
    text: str
    data: bytes

    @classmethod
    def from_event(cls, event: ServerSentEvent) -> OutputChunk:
        payload = event.json()
        text = payload.get("data", "")
        raw = base64.b64decode(payload["data_base64"]) if "data_base64" in payload else \
            text.encode()
        return cls(stream=event.event, text=text, data=raw)  # type: ignore[arg-type]


@dataclass
class ExitStatus:
    """How a streamed command ended."""

    exit_code: int | None = None
    timed_out: bool = False
    duration_ms: int | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A workflow event (`GET /events`): `id` increases per branch; `type` like `run.completed`."""

    id: int
    type: str
    data: dict[str, Any]

    @classmethod
    def from_sse(cls, event: ServerSentEvent) -> Event:
        return cls(id=int(event.id or 0), type=event.event, data=event.json())
