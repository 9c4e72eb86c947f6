"""Agent tokens: machine-local credentials for the platform and operators (state database)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from django.db import models
from django.utils import timezone

from weldr_agent.access import Scope
from weldr_agent.prepared import Prepared

TOKEN_PREFIX = "wat_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)

    def find(self, token: str) -> ApiToken | None:
        # On every authenticated request: compiled once (weldr_agent/prepared.py).
        return _active_by_hash.first(token_hash=token_hash(token))

    def revoke(self) -> int:
        """Revoke the active tokens of this queryset; return how many were revoked."""
        return self.active().update(revoked_at=timezone.now())


def _active_by_hash_query(token_hash: str) -> models.QuerySet[ApiToken]:
    return ApiToken.objects.active().filter(token_hash=token_hash)


class ApiToken(models.Model):
    """An agent token; only its SHA-256 is stored, the token itself is shown once."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The scope (weldr_agent.access): none of them set is the operator's token (everything).
    projects = models.JSONField(default=list, blank=True, editable=False,
                                help_text="Project ids it may touch (and their buckets).")
    buckets = models.JSONField(default=list, blank=True, editable=False,
                               help_text="Bucket names it may touch.")
    read_only = models.BooleanField(default=False, editable=False,
                                    help_text="GET, HEAD and OPTIONS only.")

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "agent token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, name: str, *, projects: Iterable[str] = (), buckets: Iterable[str] = (),
              read_only: bool = False) -> tuple[ApiToken, str]:
        """Create a token named `name` with its scope; return the row and the clear token
        (shown once)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = cls.objects.create(name=name, prefix=token[:10], token_hash=token_hash(token),
                                 projects=sorted(set(projects)), buckets=sorted(set(buckets)),
                                 read_only=read_only)
        return row, token

    @property
    def scope(self) -> Scope:
        return Scope(projects=frozenset(self.projects), buckets=frozenset(self.buckets),
                     read_only=self.read_only)

    def scope_text(self) -> str:
        """The scope in a few words (admin, command output)."""
        parts = [f"projects {', '.join(self.projects)}"] if self.projects else []
        parts += [f"buckets {', '.join(self.buckets)}"] if self.buckets else []
        text = "; ".join(parts) or "everything (operator)"
        return f"{text}; read-only" if self.read_only else text

    def touch(self) -> None:
        now = timezone.now()
        # At most one write a minute per token: authentication is on every request.
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now


_active_by_hash: Prepared[ApiToken] = Prepared(ApiToken, _active_by_hash_query, "token_hash")
