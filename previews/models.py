"""Machine state of preview apps and port leases (local SQLite state database).

A PortLease is the right to a host port: unique by port and by bucket, inside 3000–3019, so
that the database (not a look-then-write) decides who gets a port and that a bucket runs one
app. The Preview row outlives its lease to report how the app ended.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class PortLease(models.Model):
    port = models.PositiveIntegerField(unique=True)
    bucket = models.CharField(max_length=63, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(port__gte=settings.PREVIEW_PORT_MIN)
                & models.Q(port__lte=settings.PREVIEW_PORT_MAX),
                name="previews_portlease_port_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.port} -> {self.bucket}"


class Preview(models.Model):
    class Status(models.TextChoices):
        STARTING = "starting"
        RUNNING = "running"
        EXITED = "exited"
        FAILED = "failed"
        STOPPED = "stopped"

    class Access(models.TextChoices):
        PUBLIC = "public"
        # Only requests with a preview access token for this bucket and port (previews/tokens.py).
        TOKEN = "token"

    ACTIVE = (Status.STARTING, Status.RUNNING)

    bucket = models.CharField(max_length=63, unique=True)
    port = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    command = models.TextField()
    access = models.CharField(max_length=8, choices=Access.choices, default=Access.PUBLIC)
    container = models.CharField(max_length=128, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.bucket}:{self.port} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in self.ACTIVE

