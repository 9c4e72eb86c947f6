"""Mirror Better Auth's tables; create them only where the platform has not (dev, tests).

The SQL is what Better Auth 1.7.25's own migrations generate (core tables plus the jwt plugin
and @better-auth/api-key 1.7), in the subset of SQL PostgreSQL and SQLite share. Either order
works: where Better Auth migrated first, every table exists and nothing is touched; where this
ran first, Better Auth's migration planner finds nothing left to do (tests/auth/test_schema.py).
Indexes are created only with tables created here: the platform's own tables are left alone.
"""

from django.db import migrations, models

TABLES = {
    "user": """
        "id" text not null primary key, "name" text not null, "email" text not null unique,
        "emailVerified" boolean not null, "image" text,
        "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
        "updatedAt" timestamptz default CURRENT_TIMESTAMP not null""",
    "session": """
        "id" text not null primary key, "expiresAt" timestamptz not null,
        "token" text not null unique,
        "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
        "updatedAt" timestamptz not null, "ipAddress" text, "userAgent" text,
        "userId" text not null references "user" ("id") on delete cascade""",
    "account": """
        "id" text not null primary key, "accountId" text not null, "providerId" text not null,
        "userId" text not null references "user" ("id") on delete cascade,
        "accessToken" text, "refreshToken" text, "idToken" text,
        "accessTokenExpiresAt" timestamptz, "refreshTokenExpiresAt" timestamptz,
        "scope" text, "password" text,
        "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
        "updatedAt" timestamptz not null""",
    "verification": """
        "id" text not null primary key, "identifier" text not null, "value" text not null,
        "expiresAt" timestamptz not null,
        "createdAt" timestamptz default CURRENT_TIMESTAMP not null,
        "updatedAt" timestamptz default CURRENT_TIMESTAMP not null""",
    "jwks": """
        "id" text not null primary key, "publicKey" text not null, "privateKey" text not null,
        "createdAt" timestamptz not null, "expiresAt" timestamptz, "alg" text, "crv" text""",
    "apikey": """
        "id" text not null primary key, "configId" text not null, "name" text, "start" text,
        "referenceId" text not null, "prefix" text, "key" text not null,
        "refillInterval" integer, "refillAmount" integer, "lastRefillAt" timestamptz,
        "enabled" boolean, "rateLimitEnabled" boolean, "rateLimitTimeWindow" integer,
        "rateLimitMax" integer, "requestCount" integer, "remaining" integer,
        "lastRequest" timestamptz, "expiresAt" timestamptz,
        "createdAt" timestamptz not null, "updatedAt" timestamptz not null,
        "permissions" text, "metadata" text""",
}

# (name, table, column): Better Auth's index names must match, or its planner refuses to run.
INDEXES = [
    ("session_userId_idx", "session", "userId"),
    ("account_userId_idx", "account", "userId"),
    ("verification_identifier_idx", "verification", "identifier"),
    ("apikey_configId_idx", "apikey", "configId"),
    ("apikey_referenceId_idx", "apikey", "referenceId"),
    ("apikey_key_idx", "apikey", "key"),
]


def create_missing_tables(apps, schema_editor):
    existing = set(schema_editor.connection.introspection.table_names())
    created = set()
    for table, columns in TABLES.items():
        if table not in existing:
            schema_editor.execute(f'create table "{table}" ({columns})')
            created.add(table)
    for name, table, column in INDEXES:
        if table in created:
            schema_editor.execute(f'create index "{name}" on "{table}" ("{column}")')


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
            options={"db_table": "user", "managed": False, "ordering": ["email"]},
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
            options={"db_table": "session", "managed": False, "ordering": ["-created_at"]},
        ),
        migrations.CreateModel(
            name="Jwks",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("public_key", models.TextField(db_column="publicKey")),
                ("private_key", models.TextField(db_column="privateKey")),
                ("created_at", models.DateTimeField(db_column="createdAt")),
                ("expires_at", models.DateTimeField(blank=True, db_column="expiresAt", null=True)),
                ("alg", models.TextField(blank=True, null=True)),
                ("crv", models.TextField(blank=True, null=True)),
            ],
            options={"db_table": "jwks", "managed": False, "verbose_name": "JWKS key"},
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("config_id", models.TextField(db_column="configId", default="default")),
                ("name", models.TextField(blank=True, null=True)),
                ("start", models.TextField(blank=True, null=True)),
                ("reference_id", models.TextField(db_column="referenceId")),
                ("prefix", models.TextField(blank=True, null=True)),
                ("key", models.TextField()),
                ("enabled", models.BooleanField(default=True, null=True)),
                ("remaining", models.IntegerField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, db_column="expiresAt", null=True)),
                ("last_request", models.DateTimeField(blank=True, db_column="lastRequest",
                                                      null=True)),
                ("created_at", models.DateTimeField(db_column="createdAt")),
                ("updated_at", models.DateTimeField(db_column="updatedAt")),
            ],
            options={"db_table": "apikey", "managed": False, "verbose_name": "API key",
                     "ordering": ["-created_at"]},
        ),
    ]
