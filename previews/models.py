"""Machine state of preview apps and port leases (local SQLite state database)."""

from __future__ import annotations

from django.db import models


class Preview(models.Model):
    class Status(models.TextChoices):
        STARTING = "starting"
        RUNNING = "running"
        EXITED = "exited"
        FAILED = "failed"
        STOPPED = "stopped"

    bucket = models.CharField(max_length=63, unique=True)
    port = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.bucket}:{self.port}"


from previews.models_exec import ExecCommand  # noqa: E402,F401  (background commands)
