"""Background commands (POST /exec with "background": true), kept in the state database."""

from __future__ import annotations

import secrets

from django.db import models


def new_exec_id() -> str:
    return f"exec_{secrets.token_hex(8)}"


class ExecCommandQuerySet(models.QuerySet["ExecCommand"]):
    def running(self) -> ExecCommandQuerySet:
        return self.filter(status=ExecCommand.Status.RUNNING)

    def mark_killed(self) -> int:
        """Commands that died with their sandbox (unmount, agent restart) end as killed."""
        from django.utils import timezone

        return self.running().update(status=ExecCommand.Status.KILLED,
                                     finished_at=timezone.now())


class ExecCommand(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running"
        EXITED = "exited"
        KILLED = "killed"
        TIMED_OUT = "timed_out"

    id = models.CharField(primary_key=True, max_length=32, default=new_exec_id, editable=False)
    bucket = models.CharField(max_length=63, db_index=True)
    command = models.JSONField()
    cwd = models.CharField(max_length=4096, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    exit_code = models.IntegerField(null=True, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    objects = ExecCommandQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"
