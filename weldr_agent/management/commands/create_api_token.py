from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from weldr_agent.models import ApiToken
from weldr_agent.schema import BUCKET_SCHEMA


class Command(BaseCommand):
    help = (
        "Create an agent token; the token is printed once, as the last line. Without --project "
        "or --bucket it is the operator's (every project and bucket); with them it may touch "
        "only those projects (and the buckets their branches name) and those buckets "
        "(docs/security.md, \"Tenants\")."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="A unique name for the token.")
        parser.add_argument("--project", action="append", default=[], metavar="ID",
                            help="Scope to this project id (repeatable).")
        parser.add_argument("--bucket", action="append", default=[], metavar="NAME",
                            help="Scope to this bucket (repeatable).")
        parser.add_argument("--read-only", action="store_true",
                            help="GET, HEAD and OPTIONS only (event streams and the websocket "
                                 "included).")

    def handle(self, *args: Any, name: str, project: list[str], bucket: list[str],
               read_only: bool, **options: Any) -> None:
        name = name.strip()
        if not name or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters.")
        if any(not value.strip() or len(value) > 64 for value in project):
            raise CommandError("--project must be a project id (1 to 64 characters).")
        pattern = re.compile(BUCKET_SCHEMA["pattern"])
        for value in bucket:
            if not pattern.match(value):
                raise CommandError(f"--bucket {value!r} is not a valid bucket name.")
        if ApiToken.objects.filter(name=name).exists():
            raise CommandError(f"A token named {name!r} exists already; choose another name.")
        row, token = ApiToken.issue(name, projects=project, buckets=bucket, read_only=read_only)
        self.stdout.write(f"Created agent token {name!r} (scope: {row.scope_text()}). "
                          "It is shown once; store it now:")
        self.stdout.write(token)
