"""The platform's ownership data for weldr_agent.access: who owns a project, which projects
name a bucket. Registered by WorkflowsConfig.ready(); the base never imports this app."""

from __future__ import annotations

from collections.abc import Iterable

from weldr_agent import access
from workflows.errors import ProjectNotFound, RunNotFound
from workflows.models import Branch, Project, WorkflowRun


class ProjectOwnership:
    """`access.Ownership` over `Project.owner_id` and `Branch.bucket` (the shared database)."""

    def project_owner(self, project_id: str) -> str | None:
        return Project.objects.filter(id=project_id).values_list("owner_id", flat=True).first()

    def projects_owned(self, user_id: str) -> set[str]:
        return set(Project.objects.filter(owner_id=user_id).values_list("id", flat=True))

    def bucket_projects(self, bucket: str) -> set[str]:
        return set(Branch.objects.filter(bucket=bucket).values_list("project_id", flat=True))

    def project_buckets(self, project_ids: Iterable[str]) -> set[str]:
        return set(Branch.objects.filter(project_id__in=list(project_ids))
                   .values_list("bucket", flat=True))


def _run_project(run_id: str) -> access.Target | None:
    project = WorkflowRun.objects.filter(id=run_id).values_list("branch__project_id",
                                                               flat=True).first()
    return None if project is None else access.Target("project", project)


def register() -> None:
    access.ownership_register(ProjectOwnership())
    access.lookup_register("project_id", resolve=lambda value: access.Target("project", value),
                           missing=lambda value: ProjectNotFound())
    access.lookup_register("run_id", resolve=_run_project,
                           missing=lambda value: RunNotFound())
