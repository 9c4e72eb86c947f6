"""Mirror Better Auth's tables; create them only where the platform has not (dev, tests).

The SQL is what Better Auth 1.7.25's own migrations generate (core tables plus the jwt plugin
and @better-auth/api-key 1.7), in the subset of SQL PostgreSQL and SQLite share, under the table
and column names the settings give (BETTER_AUTH_TABLES, BETTER_AUTH_COLUMNS: Better Auth's
`modelName` and `fields`). Either order works: where Better Auth migrated first, every table
exists and nothing is touched; where this ran first, Better Auth's migration planner finds
nothing left to do (tests/auth/test_schema.py, in the default and a deployed naming). Indexes
are created only with tables created here: the platform's own tables are left alone. With
BETTER_AUTH_CREATE_TABLES off (production's default) nothing is created: the platform owns the
tables, and the start-up check (weldr_agent/betterauth/checks.py) names any that is missing.

Names are read from the settings when this file is imported, like the models': the state this
migration records always matches the models, whatever the configuration.
"""

from django.conf import settings
from django.db import migrations, models

from weldr_agent.betterauth.naming import column, table

NOW = "timestamptz default CURRENT_TIMESTAMP not null"
USER_ID = "text not null references {user} (\"id\") on delete cascade"

# model -> [(field, SQL type and constraints)], in Better Auth's order.
TABLES = {
    "user": [
        ("id", "text not null primary key"), ("name", "text not null"),
        ("email", "text not null unique"), ("emailVerified", "boolean not null"),
        ("image", "text"), ("createdAt", NOW), ("updatedAt", NOW),
    ],
    "session": [
        ("id", "text not null primary key"), ("expiresAt", "timestamptz not null"),
        ("token", "text not null unique"), ("createdAt", NOW),
        ("updatedAt", "timestamptz not null"), ("ipAddress", "text"), ("userAgent", "text"),
        ("userId", USER_ID),
    ],
    "account": [
        ("id", "text not null primary key"), ("accountId", "text not null"),
        ("providerId", "text not null"), ("userId", USER_ID),
        ("accessToken", "text"), ("refreshToken", "text"), ("idToken", "text"),
        ("accessTokenExpiresAt", "timestamptz"), ("refreshTokenExpiresAt", "timestamptz"),
        ("scope", "text"), ("password", "text"), ("createdAt", NOW),
        ("updatedAt", "timestamptz not null"),
    ],
    "verification": [
        ("id", "text not null primary key"), ("identifier", "text not null"),
        ("value", "text not null"), ("expiresAt", "timestamptz not null"),
        ("createdAt", NOW), ("updatedAt", NOW),
    ],
    "jwks": [
        ("id", "text not null primary key"), ("publicKey", "text not null"),
        ("privateKey", "text not null"), ("createdAt", "timestamptz not null"),
        ("expiresAt", "timestamptz"), ("alg", "text"), ("crv", "text"),
    ],
    "apikey": [
        ("id", "text not null primary key"), ("configId", "text not null"), ("name", "text"),
        ("start", "text"), ("referenceId", "text not null"), ("prefix", "text"),
        ("key", "text not null"), ("refillInterval", "integer"), ("refillAmount", "integer"),
        ("lastRefillAt", "timestamptz"), ("enabled", "boolean"),
        ("rateLimitEnabled", "boolean"), ("rateLimitTimeWindow", "integer"),
        ("rateLimitMax", "integer"), ("requestCount", "integer"), ("remaining", "integer"),
        ("lastRequest", "timestamptz"), ("expiresAt", "timestamptz"),
        ("createdAt", "timestamptz not null"), ("updatedAt", "timestamptz not null"),
        ("permissions", "text"), ("metadata", "text"),
    ],
}

# (model, field): Better Auth names an index "<table>_<column>_idx"; the names must match, or
# its planner refuses to run.
INDEXES = [
    ("session", "userId"), ("account", "userId"), ("verification", "identifier"),
    ("apikey", "configId"), ("apikey", "referenceId"), ("apikey", "key"),
]


def create_table_sql(model: str) -> str:
    user = f'"{table("user")}"'
    columns = ", ".join(f'"{column(field)}" {ddl.format(user=user)}' for field, ddl in TABLES[model])
    return f'create table "{table(model)}" ({columns})'


def create_index_sql(model: str, field: str) -> str:
    name = f"{table(model)}_{column(field)}_idx"
    return f'create index "{name}" on "{table(model)}" ("{column(field)}")'


def create_missing_tables(apps, schema_editor):
    if not settings.BETTER_AUTH_CREATE_TABLES:
        return
    existing = set(schema_editor.connection.introspection.table_names())
    created = set()
    for model in TABLES:
        if table(model) not in existing:
            schema_editor.execute(create_table_sql(model))
            created.add(model)
    for model, field in INDEXES:
        if model in created:
            schema_editor.execute(create_index_sql(model, field))


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
                ("email_verified", models.BooleanField(db_column=column("emailVerified"), default=False)),
                ("image", models.TextField(blank=True, null=True)),
                ("created_at", models.DateTimeField(db_column=column("createdAt"))),
                ("updated_at", models.DateTimeField(db_column=column("updatedAt"))),
            ],
            options={"db_table": table("user"), "managed": False, "ordering": ["email"]},
        ),
        migrations.CreateModel(
            name="Session",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("expires_at", models.DateTimeField(db_column=column("expiresAt"))),
                ("token", models.TextField(unique=True)),
                ("created_at", models.DateTimeField(db_column=column("createdAt"))),
                ("updated_at", models.DateTimeField(db_column=column("updatedAt"))),
                ("ip_address", models.TextField(blank=True, db_column=column("ipAddress"), null=True)),
                ("user_agent", models.TextField(blank=True, db_column=column("userAgent"), null=True)),
                ("user", models.ForeignKey(db_column=column("userId"), db_constraint=False,
                                           on_delete=models.DO_NOTHING, to="betterauth.user")),
            ],
            options={"db_table": table("session"), "managed": False, "ordering": ["-created_at"]},
        ),
        migrations.CreateModel(
            name="Jwks",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("public_key", models.TextField(db_column=column("publicKey"))),
                ("private_key", models.TextField(db_column=column("privateKey"))),
                ("created_at", models.DateTimeField(db_column=column("createdAt"))),
                ("expires_at", models.DateTimeField(blank=True, db_column=column("expiresAt"), null=True)),
                ("alg", models.TextField(blank=True, null=True)),
                ("crv", models.TextField(blank=True, null=True)),
            ],
            options={"db_table": table("jwks"), "managed": False, "verbose_name": "JWKS key"},
        ),
        migrations.CreateModel(
            name="ApiKey",
            fields=[
                ("id", models.TextField(primary_key=True, serialize=False)),
                ("config_id", models.TextField(db_column=column("configId"), default="default")),
                ("name", models.TextField(blank=True, null=True)),
                ("start", models.TextField(blank=True, null=True)),
                ("reference_id", models.TextField(db_column=column("referenceId"))),
                ("prefix", models.TextField(blank=True, null=True)),
                ("key", models.TextField()),
                ("enabled", models.BooleanField(default=True, null=True)),
                ("remaining", models.IntegerField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, db_column=column("expiresAt"), null=True)),
                ("last_request", models.DateTimeField(blank=True, db_column=column("lastRequest"),
                                                      null=True)),
                ("created_at", models.DateTimeField(db_column=column("createdAt"))),
                ("updated_at", models.DateTimeField(db_column=column("updatedAt"))),
            ],
            options={"db_table": table("apikey"), "managed": False, "verbose_name": "API key",
                     "ordering": ["-created_at"]},
        ),
    ]
