from django.contrib import admin

from commands.models import ExecCommand
from weldr_agent.admin import ReadOnlyAdmin


@admin.register(ExecCommand)
class ExecCommandAdmin(ReadOnlyAdmin):
    """Background commands: the agent records them; their output is at GET /exec/{id}/logs."""

    list_display = ("id", "bucket", "command", "status", "exit_code", "started_at",
                    "duration_ms")
    list_filter = ("status", "bucket")
    search_fields = ("id", "bucket")
