"""What an operator inspects of the shared data: projects, branches, runs (with their events),
events, versions, integrations. Read-only: the agent writes these rows through its services
(a branch has a bucket, a run a worker, an event a sequence number), never the admin."""

from __future__ import annotations

from django.contrib import admin

from weldr_agent.admin import ReadOnlyAdmin, ReadOnlyInline
from workflows.models import Branch, Event, Integration, Project, Version, WorkflowRun


@admin.register(Project)
class ProjectAdmin(ReadOnlyAdmin):
    list_display = ("name", "id", "owner_id", "created_at")
    search_fields = ("name", "id", "owner_id")


@admin.register(Branch)
class BranchAdmin(ReadOnlyAdmin):
    list_display = ("name", "project", "bucket", "created_at")
    list_filter = ("project",)
    list_select_related = ("project",)
    search_fields = ("name", "bucket", "id", "project__name")


class EventInline(ReadOnlyInline):
    model = Event
    fields = ("seq", "type", "data", "created_at")
    readonly_fields = fields
    ordering = ("seq",)


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "branch", "status", "current_step", "model", "tool_calls",
                    "input_tokens", "output_tokens", "created_at", "finished_at")
    list_filter = ("status", "current_step", "branch__project")
    list_select_related = ("branch",)
    search_fields = ("id", "branch__name", "branch__bucket", "error")
    inlines = (EventInline,)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("branch", "seq", "type", "run", "created_at")
    list_filter = ("type", "branch__project")
    list_select_related = ("branch",)
    search_fields = ("branch__name", "branch__bucket", "run__id", "type")


@admin.register(Version)
class VersionAdmin(ReadOnlyAdmin):
    list_display = ("branch", "number", "commit_hash", "description", "run", "created_at")
    list_filter = ("branch__project",)
    list_select_related = ("branch",)
    search_fields = ("commit_hash", "description", "branch__name", "branch__bucket")


@admin.register(Integration)
class IntegrationAdmin(ReadOnlyAdmin):
    list_display = ("key", "category", "project", "branch", "status", "updated_at")
    list_filter = ("status", "category", "project")
    list_select_related = ("project", "branch")
    search_fields = ("key", "branch__name", "branch__bucket", "error")
