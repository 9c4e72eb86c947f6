"""The platform's Better Auth tables, mirrored read-only (unmanaged) in the shared database.

Better Auth owns these tables (default camelCase column names). The agent only reads them to
authenticate; migration 0001 creates them where they do not exist yet (development, tests) with
the same schema Better Auth's own migrations create.
"""

from __future__ import annotations

from django.db import models


class User(models.Model):
    id = models.TextField(primary_key=True)
    name = models.TextField()
    email = models.TextField(unique=True)
    email_verified = models.BooleanField(db_column="emailVerified", default=False)
    image = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_column="createdAt")
    updated_at = models.DateTimeField(db_column="updatedAt")

    class Meta:
        managed = False
        db_table = "user"

    def __str__(self) -> str:
        return self.email


class Session(models.Model):
    id = models.TextField(primary_key=True)
    expires_at = models.DateTimeField(db_column="expiresAt")
    token = models.TextField(unique=True)
    created_at = models.DateTimeField(db_column="createdAt")
    updated_at = models.DateTimeField(db_column="updatedAt")
    ip_address = models.TextField(db_column="ipAddress", null=True, blank=True)
    user_agent = models.TextField(db_column="userAgent", null=True, blank=True)
    user = models.ForeignKey(User, models.DO_NOTHING, db_column="userId", db_constraint=False)

    class Meta:
        managed = False
        db_table = "session"

    def __str__(self) -> str:
        return f"session of {self.user_id}"


class Jwks(models.Model):
    id = models.TextField(primary_key=True)
    public_key = models.TextField(db_column="publicKey")
    private_key = models.TextField(db_column="privateKey")
    created_at = models.DateTimeField(db_column="createdAt")

    class Meta:
        managed = False
        db_table = "jwks"
        verbose_name = "JWKS key"


class ApiKey(models.Model):
    id = models.TextField(primary_key=True)
    name = models.TextField(null=True, blank=True)
    start = models.TextField(null=True, blank=True)
    prefix = models.TextField(null=True, blank=True)
    key = models.TextField()
    user = models.ForeignKey(User, models.DO_NOTHING, db_column="userId", db_constraint=False)
    enabled = models.BooleanField(null=True, default=True)
    expires_at = models.DateTimeField(db_column="expiresAt", null=True, blank=True)
    created_at = models.DateTimeField(db_column="createdAt")
    updated_at = models.DateTimeField(db_column="updatedAt")

    class Meta:
        managed = False
        db_table = "apikey"
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.start or ''}… ({self.user_id})"
