"""Mirror Better Auth's tables; create them only where the platform has not (dev, tests).

The SQL is Better Auth's own schema (core tables plus the jwt and api-key plugins), in the
subset of SQL that PostgreSQL and SQLite share.
"""

from django.db import migrations, models

TABLES = {
    "user": """
        "id" text NOT NULL PRIMARY KEY, "name" text NOT NULL, "email" text NOT NULL UNIQUE,
        "emailVerified" boolean NOT NULL DEFAULT false, "image" text,
        "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP""",
    "session": """
        "id" text NOT NULL PRIMARY KEY, "expiresAt" timestamptz NOT NULL,
        "token" text NOT NULL UNIQUE,
        "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" timestamptz NOT NULL, "ipAddress" text, "userAgent" text,
        "userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE""",
    "account": """
        "id" text NOT NULL PRIMARY KEY, "accountId" text NOT NULL, "providerId" text NOT NULL,
        "userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE,
        "accessToken" text, "refreshToken" text, "idToken" text,
        "accessTokenExpiresAt" timestamptz, "refreshTokenExpiresAt" timestamptz,
        "scope" text, "password" text,
        "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" timestamptz NOT NULL""",
    "verification": """
        "id" text NOT NULL PRIMARY KEY, "identifier" text NOT NULL, "value" text NOT NULL,
        "expiresAt" timestamptz NOT NULL,
        "createdAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
        "updatedAt" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP""",
    "jwks": """
        "id" text NOT NULL PRIMARY KEY, "publicKey" text NOT NULL, "privateKey" text NOT NULL,
        "createdAt" timestamptz NOT NULL, "expiresAt" timestamptz""",
    "apikey": """
        "id" text NOT NULL PRIMARY KEY, "name" text, "start" text, "prefix" text,
        "key" text NOT NULL, "userId" text NOT NULL REFERENCES "user" ("id") ON DELETE CASCADE,
        "refillInterval" integer, "refillAmount" integer, "lastRefillAt" timestamptz,
        "enabled" boolean DEFAULT true, "rateLimitEnabled" boolean DEFAULT true,
        "rateLimitTimeWindow" integer, "rateLimitMax" integer, "requestCount" integer DEFAULT 0,
        "remaining" integer, "lastRequest" timestamptz, "expiresAt" timestamptz,
        "createdAt" timestamptz NOT NULL, "updatedAt" timestamptz NOT NULL,
        "permissions" text, "metadata" text""",
}


def create_missing_tables(apps, schema_editor):
    connection = schema_editor.connection
    existing = set(connection.introspection.table_names())
    for table, columns in TABLES.items():
        if table not in existing:
            schema_editor.execute(f'CREATE TABLE "{table}" ({columns})')


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.RunPython(create_missing_tables, migrations.RunPython.noop, hints={}),
        migrations.CreateModel(
            name="User",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("name", models.TextField()),
                ("email", models.TextField(unique=True)),
                ("email_verified", models.BooleanField(db_column="emailVerified", default=False)),
                ("image", models.TextField(blank=True, null=True)),
                ("created_at", models.DateTimeField(db_column="createdAt")),
                ("updated_at", models.DateTimeField(db_column="updatedAt")),
            ],
            options={"db_table": "user", "managed": False},
        ),
        migrations.CreateModel(
            name="Session",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("expires_at", models.DateTimeField(db_column="expiresAt")),
                ("token", models.TextField(unique=True)),
                ("created_at", models.DateTimeField(db_column="createdAt")),
                ("updated_at", models.DateTimeField(db_column="updatedAt")),
                ("ip_address", models.TextField(blank=True, db_column="ipAddress", null=True)),
                ("user_agent", models.TextField(blank=True, db_column="userAgent", null=True)),
                ("user", models.ForeignKey(db_column="userId", db_constraint=False,
                                           on_delete=models.DO_NOTHING, to="betterauth.user")),
            ],
            options={"db_table": "session", "managed": False},
        ),
        migrations.CreateModel(
            name="Jwks",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("public_key", models.TextField(db_column="publicKey")),
                ("private_key", models.TextField(db_column="privateKey")),
                ("created_at", models.DateTimeField(db_column="createdAt")),
            ],
            options={"db_table": "jwks", "managed": False, "verbose_name": "JWKS key"},
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("name", models.TextField(blank=True, null=True)),
                ("start", models.TextField(blank=True, null=True)),
                ("prefix", models.TextField(blank=True, null=True)),
                ("key", models.TextField()),
                ("user", models.ForeignKey(db_column="userId", db_constraint=False,
                                           on_delete=models.DO_NOTHING, to="betterauth.user")),
                ("enabled", models.BooleanField(default=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, db_column="expiresAt", null=True)),
                ("created_at", models.DateTimeField(db_column="createdAt")),
                ("updated_at", models.DateTimeField(db_column="updatedAt")),
            ],
            options={"db_table": "apikey", "managed": False, "verbose_name": "API key"},
        ),
    ]
