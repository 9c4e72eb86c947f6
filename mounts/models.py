"""Machine state of bucket mounts (local SQLite state database)."""

from __future__ import annotations

from django.db import models


class Mount(models.Model):
    class Status(models.TextChoices):
        MOUNTING = "mounting"
        MOUNTED = "mounted"
        UNMOUNTING = "unmounting"
        FAILED = "failed"

    bucket = models.CharField(max_length=63, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MOUNTING)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.bucket
