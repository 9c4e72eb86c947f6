"""The tenant matrix: every operation of /openapi.json, how to call it on a tenant's objects.

test_tenants.py walks the agent's own /openapi.json and fails when an operation is neither in
OPERATIONS nor in NO_TENANT_OBJECT: a new endpoint cannot skip the rule (weldr_agent.access).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Tenant:
    """The objects of one tenant: a project, its branch, the bucket it names, a background
    command in that bucket and a run of the branch."""

    project: str
    branch: str
    bucket: str
    exec_id: str = ""
    run_id: str = ""

    @classmethod
    def missing(cls) -> Tenant:
        """Objects that exist nowhere: what a refused object must be indistinguishable from."""
        tag = secrets.token_hex(4)
        return cls(project=f"missing{tag}", branch=f"missingbranch{tag}",
                   bucket=f"tn-missing-{tag}", exec_id=f"missingexec{tag}",
                   run_id=f"missingrun{tag}")

    def ids(self) -> dict[str, str]:
        # snapshot_id: an id no snapshot has (the bucket decides before the snapshot is looked
        # up; a tenant's own call answers 404 snapshot_not_found, which is no refusal)
        return {"project_id": self.project, "branch_id": self.branch, "bucket": self.bucket,
                "exec_id": self.exec_id, "run_id": self.run_id, "snapshot_id": "0" * 32}


Call = Callable[[httpx.Client, Tenant], "Answer"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


def answer(response: httpx.Response) -> Answer:
    try:
        return Answer(response.status_code, response.json())
    except ValueError:
        return Answer(response.status_code, response.text[:300])


def _stream(client: httpx.Client, path: str, **params: Any) -> Answer:
    """An event stream: the status (and the JSON error body); a 200 stream is left at once."""
    with client.stream("GET", path, params=params or None,
                       headers={"Accept": "text/event-stream"}) as response:
        if response.status_code == 200:
            return Answer(200, response.headers.get("content-type", ""))
        response.read()
        return answer(response)


def _message(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as in /openapi.json
    kind: str  # "project" or "bucket": what the tenant rule checks; "list"/"create": special
    call: Call

    @property
    def safe(self) -> bool:
        return self.method in ("GET", "HEAD", "OPTIONS")

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


def _json(method: str, path: str, body: Callable[[Tenant], dict[str, Any]]) -> Call:
    def call(client: httpx.Client, tenant: Tenant) -> Answer:
        return answer(client.request(method, path.format(**tenant.ids()), json=body(tenant)))
    return call


def _plain(method: str, template: str, **params: str) -> Call:
    def call(client: httpx.Client, tenant: Tenant) -> Answer:
        return answer(client.request(method, template.format(**tenant.ids()),
                                     params=params or None))
    return call


def _branch(tenant: Tenant) -> dict[str, str]:
    return {"project_id": tenant.project, "branch_id": tenant.branch}


SCRATCH = "scratch.txt"

# In an order that leaves the destructive calls (kill, unmount) for last: the "own" test runs
# them in this order.
OPERATIONS = [
    # -- projects
    Operation("GET", "/projects/{project_id}/branches", "project",
              _plain("GET", "/projects/{project_id}/branches")),
    Operation("POST", "/projects/{project_id}/branches", "project", _json(
        "POST", "/projects/{project_id}/branches",
        lambda t: {"name": f"b{secrets.token_hex(3)}",
                   "bucket": f"tn-new-{secrets.token_hex(4)}"})),
    Operation("GET", "/events", "project", lambda c, t: _stream(
        c, "/events", project_id=t.project, branch_id=t.branch, last_event_id="0")),
    Operation("POST", "/trigger", "project", _json(
        "POST", "/trigger", lambda t: {**_branch(t), "model": "scripted/done",
                                       "message": _message("hello")})),
    Operation("GET", "/runs/{run_id}", "project", _plain("GET", "/runs/{run_id}")),
    Operation("POST", "/revert", "project", _json(
        "POST", "/revert", lambda t: {**_branch(t), "version_id": "no-such-version"})),
    Operation("POST", "/install-integrations", "project", _json(
        "POST", "/install-integrations",
        lambda t: {**_branch(t), "integrations": [{"key": "no-such-integration"}]})),
    # -- buckets
    Operation("GET", "/mounts/{bucket}", "bucket", _plain("GET", "/mounts/{bucket}")),
    Operation("POST", "/mounts", "bucket",
              _json("POST", "/mounts", lambda t: {"bucket": t.bucket})),
    Operation("POST", "/mounts/{bucket}/sync", "bucket", _plain("POST", "/mounts/{bucket}/sync")),
    Operation("GET", "/mounts/{bucket}/egress", "bucket", _plain("GET", "/mounts/{bucket}/egress")),
    Operation("PUT", "/mounts/{bucket}/egress", "bucket", _json(
        "PUT", "/mounts/{bucket}/egress", lambda t: {"mode": "internet"})),
    Operation("DELETE", "/mounts/{bucket}/egress", "bucket",
              _plain("DELETE", "/mounts/{bucket}/egress")),
    Operation("GET", "/mounts/{bucket}/snapshots", "bucket",
              _plain("GET", "/mounts/{bucket}/snapshots")),
    Operation("POST", "/mounts/{bucket}/snapshots", "bucket", _json(
        "POST", "/mounts/{bucket}/snapshots", lambda t: {"name": "tenant"})),
    Operation("GET", "/mounts/{bucket}/snapshots/policy", "bucket",
              _plain("GET", "/mounts/{bucket}/snapshots/policy")),
    Operation("PUT", "/mounts/{bucket}/snapshots/policy", "bucket", _json(
        "PUT", "/mounts/{bucket}/snapshots/policy", lambda t: {"keep": 20, "max_age_days": 0})),
    Operation("DELETE", "/mounts/{bucket}/snapshots/{snapshot_id}", "bucket",
              _plain("DELETE", "/mounts/{bucket}/snapshots/{snapshot_id}")),
    Operation("POST", "/mounts/{bucket}/snapshots/{snapshot_id}/restore", "bucket", _json(
        "POST", "/mounts/{bucket}/snapshots/{snapshot_id}/restore", lambda t: {})),
    Operation("POST", "/mounts/{bucket}/snapshots/{snapshot_id}/fork", "bucket", _json(
        "POST", "/mounts/{bucket}/snapshots/{snapshot_id}/fork",
        lambda t: {"name": f"{t.bucket[:50]}-fork"})),
    Operation("POST", "/mounts/{bucket}/promote", "bucket", _json(
        "POST", "/mounts/{bucket}/promote", lambda t: {})),
    Operation("GET", "/files/{bucket}", "bucket", _plain("GET", "/files/{bucket}")),
    Operation("GET", "/files/{bucket}/content", "bucket",
              _plain("GET", "/files/{bucket}/content", path="hello.txt")),
    Operation("PUT", "/files/{bucket}/content", "bucket", lambda c, t: answer(c.put(
        f"/files/{t.bucket}/content", params={"path": SCRATCH}, content=b"written"))),
    Operation("DELETE", "/files/{bucket}/content", "bucket",
              _plain("DELETE", "/files/{bucket}/content", path=SCRATCH)),
    Operation("POST", "/exec", "bucket", _json(
        "POST", "/exec", lambda t: {"bucket": t.bucket, "command": "true"})),
    Operation("GET", "/exec/{exec_id}", "bucket", _plain("GET", "/exec/{exec_id}")),
    Operation("GET", "/exec/{exec_id}/logs", "bucket",
              lambda c, t: _stream(c, f"/exec/{t.exec_id}/logs")),
    Operation("GET", "/previews/{bucket}", "bucket", _plain("GET", "/previews/{bucket}")),
    Operation("GET", "/previews/{bucket}/logs", "bucket", _plain("GET", "/previews/{bucket}/logs")),
    Operation("POST", "/previews/start", "bucket", _json(
        # An invalid port: the owner gets 400 invalid_port (the rule let it through) and no
        # preview starts (host ports are machine-global).
        "POST", "/previews/start", lambda t: {"bucket": t.bucket, "port": 2999})),
    Operation("POST", "/previews/{bucket}/tokens", "bucket", _json(
        "POST", "/previews/{bucket}/tokens", lambda t: {})),
    Operation("POST", "/previews/stop", "bucket", _json(
        "POST", "/previews/stop", lambda t: {"bucket": t.bucket})),
    Operation("DELETE", "/exec/{exec_id}", "bucket", _plain("DELETE", "/exec/{exec_id}")),
    Operation("POST", "/mounts/unmount", "bucket", _json(
        "POST", "/mounts/unmount", lambda t: {"bucket": t.bucket, "force": True})),
]


def _listed(path: str, key: str, field: str, **params: str) -> Callable[[httpx.Client], list]:
    def call(client: httpx.Client) -> list[str]:
        response = client.get(path, params=params or None)
        assert response.status_code == 200, response.text
        return [row[field] for row in response.json()[key]]
    return call


# Lists: what a principal sees must be its own objects only (field: project id or bucket).
LISTS = {
    "GET /projects": ("project", _listed("/projects", "projects", "id")),
    "GET /runs": ("project", _listed("/runs", "runs", "project_id")),
    "GET /mounts": ("bucket", _listed("/mounts", "mounts", "bucket")),
    "GET /previews": ("bucket", _listed("/previews", "previews", "bucket")),
}

# Operations that touch no tenant's object, and why.
NO_TENANT_OBJECT = {
    "GET /health": "no credential: the machine's health",
    "GET /health/live": "no credential: the process answers",
    "GET /whoami": "the caller itself",
    "GET /integrations": "the catalogue of integrations, the same for everyone",
    "POST /projects": "makes a new project owned by the caller (scoped tokens: 403 out_of_scope)",
}


def normalised(result: Answer, tenant: Tenant) -> str:
    """The answer with the tenant's ids replaced by their names (a 404 may quote the id)."""
    text = json.dumps([result.status, result.body], sort_keys=True)
    for name, value in tenant.ids().items():
        if value:
            text = text.replace(value, f"<{name}>")
    return text
