"""The platform's Better Auth tables, mirrored read-only (unmanaged) in the shared database.

Better Auth owns these tables. The agent only reads them to authenticate; migration 0001 creates
them where they do not exist yet and BETTER_AUTH_CREATE_TABLES allows it (development, tests) with
exactly the schema Better Auth 1.7's own migrations create (core tables, jwt plugin, and
@better-auth/api-key 1.7, whose keys belong to `referenceId` rather than a `userId`).
tests/auth/test_schema.py compares the two for real, in the default and a deployed naming.

Table and column names follow the platform's configuration (BETTER_AUTH_TABLES,
BETTER_AUTH_COLUMNS), read once when this module is imported: `table("user")` may be `users`,
`column("emailVerified")` may be `email_verified`.
"""

from __future__ import annotations

from django.db import models

from weldr_agent.betterauth.naming import column, table


class User(models.Model):
    id = models.TextField(primary_key=True)
    name = models.TextField()
    email = models.TextField(unique=True)
    email_verified = models.BooleanField(db_column=column("emailVerified"), default=False)
    image = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(db_column=column("createdAt"))
    updated_at = models.DateTimeField(db_column=column("updatedAt"))

    class Meta:
        managed = False
        db_table = table("user")
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class Session(models.Model):
    id = models.TextField(primary_key=True)
    expires_at = models.DateTimeField(db_column=column("expiresAt"))
    # The unsigned session token: a credential, never shown (the admin hides it).
    token = models.TextField(unique=True)
    created_at = models.DateTimeField(db_column=column("createdAt"))
    updated_at = models.DateTimeField(db_column=column("updatedAt"))
    ip_address = models.TextField(db_column=column("ipAddress"), null=True, blank=True)
    user_agent = models.TextField(db_column=column("userAgent"), null=True, blank=True)
    user = models.ForeignKey(User, models.DO_NOTHING, db_column=column("userId"),
                             db_constraint=False)

    class Meta:
        managed = False
        db_table = table("session")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"session of {self.user_id}"


class Jwks(models.Model):
    id = models.TextField(primary_key=True)
    public_key = models.TextField(db_column=column("publicKey"))
    private_key = models.TextField(db_column=column("privateKey"))
    created_at = models.DateTimeField(db_column=column("createdAt"))
    expires_at = models.DateTimeField(db_column=column("expiresAt"), null=True, blank=True)
    alg = models.TextField(null=True, blank=True)
    crv = models.TextField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = table("jwks")
        verbose_name = "JWKS key"


class ApiKey(models.Model):
    id = models.TextField(primary_key=True)
    config_id = models.TextField(db_column=column("configId"), default="default")
    name = models.TextField(null=True, blank=True)
    start = models.TextField(null=True, blank=True)
    # The owner: a user id (the plugin's default `references: "user"`) or an organization id.
    reference_id = models.TextField(db_column=column("referenceId"))
    prefix = models.TextField(null=True, blank=True)
    # base64url(SHA-256(key)) without padding; the key itself is never stored.
    key = models.TextField()
    enabled = models.BooleanField(null=True, default=True)
    remaining = models.IntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(db_column=column("expiresAt"), null=True, blank=True)
    last_request = models.DateTimeField(db_column=column("lastRequest"), null=True, blank=True)
    created_at = models.DateTimeField(db_column=column("createdAt"))
    updated_at = models.DateTimeField(db_column=column("updatedAt"))

    class Meta:
        managed = False
        db_table = table("apikey")
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.start or ''}… ({self.reference_id})"
