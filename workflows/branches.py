"""What a run, a revert, an install and a snapshot restore share about a branch: its workspace,
holding it against the others, and numbering the versions made on it.

The floor below services, engine and integrations: the engine and an install need these as much
as the API's verbs do, and the API's verbs start runs (services -> worker -> engine). Kept here,
every arrow inside workflows points one way (tests/test_architecture.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from mounts.services import mount_ensure, workspace_path
from weldr_agent.databases import SHARED_DB
from weldr_agent.errors import ConflictError
from workflows.errors import RunActive
from workflows.events import event_publish
from workflows.models import Branch, Version, WorkflowRun


def branch_workspace(branch: Branch) -> Path:
    """The branch's workspace directory: its bucket mounted (WORKSPACE_MODE=mount), or its
    branch directory restored from S3 (WORKSPACE_MODE=local); the mounts app decides."""
    mount_ensure(bucket=branch.bucket)
    return Path(workspace_path(branch.bucket))


@contextmanager
def branch_exclusive(*, branch: Branch, purpose: str) -> Iterator[None]:
    """Hold the branch's active-run slot (a `running` row) while changing its workspace.

    A trigger and a revert or install cannot interleave: whichever inserts its active row first
    wins (the partial unique constraint), the other gets 409. A crash leaves a `running` row that
    the next start-up fails like any interrupted run.
    """
    try:
        with transaction.atomic(using=SHARED_DB):
            guard = WorkflowRun.objects.create(
                branch=branch, model=purpose, status=WorkflowRun.Status.RUNNING,
                agent_instance=settings.INSTANCE_ID)
    except IntegrityError:
        raise RunActive(f"A workflow run is active on this branch; {purpose} when it ends.") \
            from None
    try:
        yield
    finally:
        guard.delete()


def version_record(*, branch: Branch, commit_hash: str, description: str,
                   run: WorkflowRun | None = None) -> Version:
    """Number and store a version; the unique (branch, number) settles concurrent writers."""
    for _attempt in range(5):
        number = (branch.versions.aggregate(top=Max("number"))["top"] or 0) + 1
        try:
            with transaction.atomic(using=SHARED_DB):
                version = Version.objects.create(branch=branch, number=number, run=run,
                                                 commit_hash=commit_hash, description=description)
            break
        except IntegrityError:
            continue
    else:
        raise ConflictError("Could not number the version; try again.")
    event_publish(branch=branch, type="version.created", run=run, data={
        "version_id": version.id, "number": version.number, "commit_hash": commit_hash,
        "description": description,
    })
    return version
