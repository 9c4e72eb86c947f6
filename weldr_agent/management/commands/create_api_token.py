from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from weldr_agent.models import ApiToken


class Command(BaseCommand):
    help = "Create an agent token; the token is printed once, as the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="A unique name for the token.")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        if ApiToken.objects.filter(name=name).exists():
            raise CommandError(f"A token named {name!r} exists already; choose another name.")
        _row, token = ApiToken.issue(name)
        self.stdout.write(f"Created agent token {name!r}. It is shown once; store it now:")
        self.stdout.write(token)
