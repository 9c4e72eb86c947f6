"""Every operation of the agent's HTTP API, by the name the SDK calls it: one line each.

`tests/sdk` compares this table with the agent's `/openapi.json` both ways (an operation
without an entry, or an entry the schema lacks, fails) and checks that every entry is used by
an SDK method. Adding an endpoint to the SDK: one line here, one method in `api.py`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    # Safe to send again after a lost answer: GET/PUT/DELETE, and POSTs whose repeat is a
    # no-op (mounting a mounted bucket answers 200; a second sync flushes nothing new).
    idempotent: bool

    def url(self, **params: str) -> str:
        from urllib.parse import quote

        return self.path.format(**{k: quote(str(v), safe="") for k, v in params.items()})


def _op(method: str, path: str, idempotent: bool | None = None) -> Operation:
    return Operation(method, path, method != "POST" if idempotent is None else idempotent)


OPERATIONS: dict[str, Operation] = {
    "health": _op("GET", "/health"),
    "health.live": _op("GET", "/health/live"),
    "whoami": _op("GET", "/whoami"),
    "mounts.list": _op("GET", "/mounts"),
    "mounts.create": _op("POST", "/mounts", idempotent=True),
    "mounts.get": _op("GET", "/mounts/{bucket}"),
    "mounts.unmount": _op("POST", "/mounts/unmount"),
    "mounts.sync": _op("POST", "/mounts/{bucket}/sync", idempotent=True),
    "mounts.egress.get": _op("GET", "/mounts/{bucket}/egress"),
    "mounts.egress.set": _op("PUT", "/mounts/{bucket}/egress"),
    "mounts.egress.reset": _op("DELETE", "/mounts/{bucket}/egress"),
    "mounts.promote": _op("POST", "/mounts/{bucket}/promote"),
    "snapshots.list": _op("GET", "/mounts/{bucket}/snapshots"),
    "snapshots.create": _op("POST", "/mounts/{bucket}/snapshots"),
    "snapshots.delete": _op("DELETE", "/mounts/{bucket}/snapshots/{snapshot_id}"),
    "snapshots.restore": _op("POST", "/mounts/{bucket}/snapshots/{snapshot_id}/restore"),
    "snapshots.fork": _op("POST", "/mounts/{bucket}/snapshots/{snapshot_id}/fork"),
    "snapshots.policy.get": _op("GET", "/mounts/{bucket}/snapshots/policy"),
    "snapshots.policy.set": _op("PUT", "/mounts/{bucket}/snapshots/policy"),
    "files.list": _op("GET", "/files/{bucket}"),
    "files.read": _op("GET", "/files/{bucket}/content"),
    "files.write": _op("PUT", "/files/{bucket}/content"),
    "files.delete": _op("DELETE", "/files/{bucket}/content"),
    "exec": _op("POST", "/exec"),
    "exec.get": _op("GET", "/exec/{exec_id}"),
    "exec.kill": _op("DELETE", "/exec/{exec_id}"),
    "exec.logs": _op("GET", "/exec/{exec_id}/logs"),
    "previews.list": _op("GET", "/previews"),
    "previews.get": _op("GET", "/previews/{bucket}"),
    "previews.start": _op("POST", "/previews/start"),
    "previews.stop": _op("POST", "/previews/stop", idempotent=True),
    "previews.logs": _op("GET", "/previews/{bucket}/logs"),
    "previews.tokens.create": _op("POST", "/previews/{bucket}/tokens"),
    "projects.list": _op("GET", "/projects"),
    "projects.create": _op("POST", "/projects"),
    "branches.list": _op("GET", "/projects/{project_id}/branches"),
    "branches.create": _op("POST", "/projects/{project_id}/branches"),
    "trigger": _op("POST", "/trigger"),
    "runs.list": _op("GET", "/runs"),
    "runs.get": _op("GET", "/runs/{run_id}"),
    "events": _op("GET", "/events"),
    "revert": _op("POST", "/revert"),
    "integrations.list": _op("GET", "/integrations"),
    "integrations.install": _op("POST", "/install-integrations"),
}
