"""Workflow runs and workspace snapshots (docs/snapshots.md): the checkpoint a run starts with,
`POST /revert {"mode": "snapshot"}`, and what the snapshots verbs need of workflows — runs held
off during a restore and the branches told — registered with mounts (which imports no workflows).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from mounts import snapshots
from mounts.validators import validate_bucket_name
from workflows.branches import branch_exclusive
from workflows.errors import VersionNotFound
from workflows.events import event_publish
from workflows.models import Branch, Version


def branch_revert_snapshot(*, branch: Branch, version_id: str) -> dict[str, Any]:
    """The whole workspace back to the checkpoint taken before the run that made this version —
    untracked and ignored files too (node_modules, build output), which a git revert cannot
    bring back. Later versions' rows stay, as with a git revert; the workspace's .git is the
    checkpoint's."""
    version = Version.objects.filter(id=version_id, branch=branch).first()
    if version is None:
        raise VersionNotFound()
    bucket = validate_bucket_name(branch.bucket)
    checkpoint = snapshots.run_checkpoint(bucket=bucket, run_id=version.run_id or "")
    return {"success": True, "mode": "snapshot",
            **snapshots.snapshot_restore(bucket=bucket, snapshot_id=checkpoint)}


@contextmanager
def runs_held(bucket: str) -> Iterator[None]:
    """Every branch on this bucket held against workflow runs for a restore (409 run_active
    while one is active): no run may see its workspace swapped under it, nor start meanwhile."""
    with ExitStack() as stack:
        for branch in Branch.objects.filter(bucket=bucket):
            stack.enter_context(branch_exclusive(branch=branch, purpose="snapshot restore"))
        yield


def branches_tell(bucket: str, type: str, data: dict[str, Any], branch_id: str | None) -> None:
    """A snapshot event on the branch given, else on every branch using the bucket."""
    branches = [branch_id] if branch_id else list(
        Branch.objects.filter(bucket=bucket).values_list("id", flat=True))
    for branch in branches:
        event_publish(branch=branch, type=type, data=data)


def register() -> None:
    snapshots.restore_hold_register(runs_held)
    snapshots.listener_register(branches_tell)
