"""The verbs of workflows: projects, branches, runs, versions and revert.

What a run and an install share with these verbs (a branch's workspace, holding it, recording a
version) is one floor down, in branches.py: the engine that runs a trigger needs it too.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from mounts.validators import validate_bucket_name
from weldr_agent import access
from weldr_agent.databases import SHARED_DB
from workflows import gitrepo, worker
from workflows.branches import branch_exclusive, branch_workspace, version_record
from workflows.errors import (
    BranchExists,
    BranchNotFound,
    BucketTaken,
    ProjectNotFound,
    RunActive,
    RunNotFound,
    VersionNotFound,
)
from workflows.events import event_publish
from workflows.models import Branch, EventCounter, Message, Project, Version, WorkflowRun

logger = logging.getLogger("weldr.workflows")


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
