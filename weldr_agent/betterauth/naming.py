"""Table and column names of Better Auth's models, as the settings say the platform names them.

Better Auth names a model's table after the model (`user`) unless `modelName` says otherwise, and
a field's column after the field (`emailVerified`) unless `fields` (or a Drizzle schema) maps it,
typically to snake_case. BETTER_AUTH_TABLES and BETTER_AUTH_COLUMNS tell the agent which; the
mirror models, migration 0001 and the start-up check all take their names from here.
"""

from __future__ import annotations

import re

from django.conf import settings


def table(model: str) -> str:
    """The table of a Better Auth model (`user`, `session`, `jwks`, `apikey`, …)."""
    return settings.BETTER_AUTH_TABLES[model]


def column(field: str) -> str:
    """The column of a Better Auth field, given by its own camelCase name (`emailVerified`)."""
    if settings.BETTER_AUTH_COLUMNS == "snake_case":
        return snake_case(field)
    return field


def snake_case(field: str) -> str:
    # Better Auth's field names are plain camelCase (no acronyms): one underscore per capital.
    return re.sub(r"[A-Z]", lambda m: f"_{m.group().lower()}", field)
