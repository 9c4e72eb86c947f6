"""A bucket's egress policy (local SQLite state database); absent: the settings' default."""

from __future__ import annotations

from django.db import models


class EgressPolicy(models.Model):
    class Mode(models.TextChoices):
        INTERNET = "internet"
        ALLOWLIST = "allowlist"
        NONE = "none"

    bucket = models.CharField(max_length=63, unique=True)
    mode = models.CharField(max_length=16, choices=Mode.choices)
    # Entries as given: CIDRs, addresses or host names.
    allow = models.JSONField(default=list)
    deny = models.JSONField(default=list)
    # Host name -> the addresses it resolved to when the policy was set (pinned).
    pinned = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.bucket}: {self.mode}"
