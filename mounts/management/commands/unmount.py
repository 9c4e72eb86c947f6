from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mounts.management import state_db_ready
from mounts.services import mount_remove
from weldr_agent.errors import APIError


class Command(BaseCommand):
    help = ("Unmount a bucket exactly as POST /mounts/unmount does: flush every write to S3, "
            "confirm a final Litestream sync, stop Litestream, unmount, free the slot.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bucket")
        parser.add_argument("--force", action="store_true",
                            help="stop a preview running on the bucket instead of refusing")

    def handle(self, *args: Any, bucket: str, force: bool, **options: Any) -> None:
        state_db_ready()
        try:
            mount_remove(bucket=bucket, force=force)
        except APIError as error:
            raise CommandError(f"{error.default_code}: {error.detail}") from error
        self.stdout.write(json.dumps({"bucket": bucket, "status": "unmounted"}))
