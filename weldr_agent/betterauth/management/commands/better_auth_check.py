"""`manage.py better_auth_check`: do the platform's Better Auth tables match the settings?"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from weldr_agent.betterauth.checks import OPTIONAL, required_columns, schema_problems
from weldr_agent.databases import SHARED_DB


class Command(BaseCommand):
    help = ("Check that the shared database has Better Auth's tables and columns under the names "
            "BETTER_AUTH_TABLES and BETTER_AUTH_COLUMNS give (what `serve` checks at start-up).")

    def handle(self, *args: Any, **options: Any) -> None:
        from django.db import connections

        problems, absent = schema_problems(connections[SHARED_DB])
        if problems:
            raise CommandError("; ".join(problems))
        for model, (table, columns) in required_columns().items():
            found = f"no table: {OPTIONAL[model]}" if model in absent else ", ".join(columns)
            self.stdout.write(f"{model}: {table} ({found})")
