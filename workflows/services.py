"""The verbs of workflows: projects, branches, runs, versions and revert."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from rest_framework import status

from mounts.validators import validate_bucket_name
from weldr_agent import access
from weldr_agent.databases import SHARED_DB
from weldr_agent.errors import APIError, ConflictError, NotFoundError
from workflows import gitrepo
from workflows.events import event_publish
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    Branch,
    EventCounter,
    Message,
    Project,
    Version,
    WorkflowRun,
)

logger = logging.getLogger("weldr.workflows")


class ProjectNotFound(NotFoundError):
    default_code = "project_not_found"
    default_detail = "No such project."


class BranchNotFound(NotFoundError):
    default_code = "branch_not_found"
    default_detail = "No such branch in this project."


class RunNotFound(NotFoundError):
    default_code = "run_not_found"
    default_detail = "No such run."


class VersionNotFound(NotFoundError):
    default_code = "version_not_found"
    default_detail = "No such version on this branch."


class RunActive(ConflictError):
    default_code = "run_active"
    default_detail = "A workflow run is already active on this branch; wait for it to finish."


class BranchExists(ConflictError):
    default_code = "branch_exists"
    default_detail = "The project already has a branch with this name."


class BucketTaken(ConflictError):
    default_code = "bucket_taken"
    default_detail = "Another tenant's project names this bucket; choose another name."


def bucket_claim_check(*, principal: Any, bucket: str) -> None:
    """A new branch may not name a bucket of a project its creator may not touch: that would
    be a way into another tenant's workspace (weldr_agent.access)."""
    if not access.bucket_claimable(principal, bucket):
        raise BucketTaken()


def project_create(*, name: str, owner_id: str = "") -> Project:
    return Project.objects.create(name=name, owner_id=owner_id)


def project_get(*, project_id: str) -> Project:
    project = Project.objects.filter(id=project_id).first()
    if project is None:
        raise ProjectNotFound()
    return project


def _bucket_validate(bucket: str) -> None:
    """400 `invalid_bucket` (mounts.errors.InvalidBucket) unless a valid S3 bucket name."""
    validate_bucket_name(bucket)


def branch_create(*, project: Project, name: str, bucket: str) -> Branch:
    _bucket_validate(bucket)
    try:
        with transaction.atomic(using=SHARED_DB):
            branch = Branch.objects.create(project=project, name=name, bucket=bucket)
            EventCounter.objects.create(branch=branch)
    except IntegrityError:
        raise BranchExists() from None
    return branch


def branch_get(*, project_id: str, branch_id: str) -> Branch:
    project_get(project_id=project_id)
    branch = Branch.objects.filter(id=branch_id, project_id=project_id).first()
    if branch is None:
        raise BranchNotFound()
    return branch


def branch_workspace(branch: Branch) -> Path:
    """The branch's workspace directory: its bucket mounted (WORKSPACE_MODE=mount), or its
    branch directory restored from S3 (WORKSPACE_MODE=local); the mounts app decides."""
    from mounts.services import mount_ensure, workspace_path

    mount_ensure(bucket=branch.bucket)
    return Path(workspace_path(branch.bucket))


def run_trigger(*, branch: Branch, text: str, model: str | None = None) -> WorkflowRun:
    """Record the user's message and queue a run; one active run per branch (the DB decides)."""
    try:
        with transaction.atomic(using=SHARED_DB):
            run = WorkflowRun.objects.create(branch=branch, model=model or settings.DEFAULT_MODEL)
            Message.objects.create(branch=branch, role=Message.Role.USER, run=run,
                                   content=[{"type": "text", "text": text}])
    except IntegrityError:
        raise RunActive() from None
    event_publish(branch=branch, type="run.queued", run=run,
                  data={"run_id": run.id, "model": run.model})
    from workflows import worker

    worker.run_submit(run.id)
    return run


def run_get(*, run_id: str) -> WorkflowRun:
    run = WorkflowRun.objects.filter(id=run_id).select_related("branch").first()
    if run is None:
        raise RunNotFound()
    return run


def runs_list(*, project_id: str | None = None, branch_id: str | None = None) -> Any:
    runs = WorkflowRun.objects.select_related("branch").prefetch_related("versions")
    if project_id:
        runs = runs.filter(branch__project_id=project_id)
    if branch_id:
        runs = runs.filter(branch_id=branch_id)
    return runs.order_by("-created_at")


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


def branch_has_active_run(branch: Branch) -> bool:
    return branch.runs.filter(status__in=ACTIVE_RUN_STATUSES).exists()


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


def branch_revert(*, branch: Branch, version_id: str) -> Version:
    """Restore the workspace's tree to a version with a new commit; history is kept."""
    target = Version.objects.filter(id=version_id, branch=branch).first()
    if target is None:
        raise VersionNotFound()
    with branch_exclusive(branch=branch, purpose="revert"):
        repo = gitrepo.Repo(bucket=branch.bucket, workspace=branch_workspace(branch))
        gitrepo.repo_ensure(repo)
        gitrepo.tree_restore(repo, target.commit_hash)
        description = f"Revert to version {target.number}: {target.description}"[:500]
        commit = gitrepo.commit_all(repo, description) or gitrepo.head(repo)
        return version_record(branch=branch, commit_hash=commit, description=description)


class InvalidEventId(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_event_id"
    default_detail = "Last-Event-ID must be a non-negative integer."


def last_event_id_parse(value: str | None) -> int | None:
    """The client's last event id, or None when it starts fresh (live events only)."""
    if value in (None, ""):
        return None
    if not str(value).isdigit():
        raise InvalidEventId()
    return int(value)
