"""Start-up check: the shared database has Better Auth's tables and columns where the settings say.

A platform that names its tables or columns otherwise than BETTER_AUTH_TABLES / BETTER_AUTH_COLUMNS
say would otherwise turn every platform credential into a 500 (or a silent 401) at the first
request. Start-up refuses instead, with ImproperlyConfigured naming the setting and what is
missing. The core tables (user, session) must exist; a plugin's table (jwks, apikey) may be
absent (the platform does not use the plugin), and x-api-key credentials are then refused.

It costs one catalogue read per table (milliseconds). An unreachable shared database is not a
configuration error: the check logs that it could not run and start-up goes on (/health reports
the database), so a platform's database outage never turns into a restart loop.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from weldr_agent.betterauth.models import ApiKey, Jwks, Session, User
from weldr_agent.betterauth.naming import snake_case, table
from weldr_agent.databases import SHARED_DB

logger = logging.getLogger("weldr.betterauth")

MIRRORS = {"user": User, "session": Session, "jwks": Jwks, "apikey": ApiKey}
# Plugins' models: a platform without the plugin has no such table, and that is no error. Without
# `apikey`, x-api-key credentials are refused (401); `jwks` is only mirrored (the agent fetches
# the JWKS over HTTP). Where the table exists, its columns are checked like the others'.
OPTIONAL = {"jwks": "nothing in the agent reads it",
            "apikey": "x-api-key credentials are refused"}
# Optional models whose table the last start-up check did not find.
_absent: set[str] = set()


def plugin_absent(model: str) -> bool:
    """True when start-up found no table for this plugin's model (see OPTIONAL)."""
    return model in _absent


def required_columns() -> dict[str, tuple[str, list[str]]]:
    """model -> (table, columns the agent reads), as the mirror models name them."""
    return {model: (mirror._meta.db_table, [f.column for f in mirror._meta.concrete_fields])
            for model, mirror in MIRRORS.items()}


def _other_naming(name: str) -> str:
    if settings.BETTER_AUTH_COLUMNS == "snake_case":
        return "camelCase"
    return "snake_case" if snake_case(name) != name else ""


def _missing_columns(table: str, missing: list[str]) -> str:
    hint = _other_naming(missing[0])
    return (f'table "{table}" lacks column(s) {", ".join(missing)} '
            f"(BETTER_AUTH_COLUMNS={settings.BETTER_AUTH_COLUMNS}"
            + (f"; the platform may use {hint}" if hint else "") + ")")


def schema_problems(connection: BaseDatabaseWrapper) -> tuple[list[str], list[str]]:
    """(what the settings expect but the database lacks, one sentence each; optional models
    without a table). No problem means the agent can read every table it needs."""
    problems, absent = [], []
    with connection.cursor() as cursor:
        existing = set(connection.introspection.table_names(cursor))
        for model, (table, columns) in required_columns().items():
            if table not in existing and model in OPTIONAL:
                absent.append(model)
            elif table not in existing:
                problems.append(f'table "{table}" (Better Auth model {model}) does not exist; '
                                f"set BETTER_AUTH_TABLES={model}=<its table>")
            else:
                description = connection.introspection.get_table_description(cursor, table)
                present = {column.name for column in description}
                if missing := [c for c in columns if c not in present]:
                    problems.append(_missing_columns(table, missing))
    return problems, absent


def schema_check(connection: BaseDatabaseWrapper | None = None) -> None:
    """Raise ImproperlyConfigured when Better Auth's tables do not match the settings."""
    connection = connection or connections[SHARED_DB]
    try:
        problems, absent = schema_problems(connection)
    except DatabaseError as error:
        logger.warning("Better Auth's tables could not be checked (shared database: %s); "
                       "going on without the check", str(error).strip())
        return
    finally:
        # Start-up's thread serves nothing: leave no idle connection to the platform's database.
        if not connection.in_atomic_block:
            connection.close()
    _absent.clear()
    _absent.update(absent)
    for model in absent:
        logger.warning('Better Auth has no table "%s" (BETTER_AUTH_TABLES): %s', table(model),
                       OPTIONAL[model])
    if problems:
        raise ImproperlyConfigured(
            "Better Auth's tables in the shared database do not match the settings: "
            + "; ".join(problems) + ". See BETTER_AUTH_TABLES and BETTER_AUTH_COLUMNS in README.md."
        )
