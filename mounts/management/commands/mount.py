from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mounts.management import state_db_ready
from mounts.serializers import MountSerializer
from mounts.services import mount_create, mount_sync
from weldr_agent.errors import APIError


class Command(BaseCommand):
    help = ("Mount a bucket with JuiceFS + Litestream at WORKSPACE_BASE/BUCKET, exactly as "
            "POST /mounts does; with --sync, make an existing mount durable in S3 instead.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bucket")
        parser.add_argument("--sync", action="store_true",
                            help="upload staged blocks and sync metadata now (zero RPO)")
        parser.add_argument("--layout", choices=["files", "image"], default=None,
                            help="workspace layout of a new volume (default WORKSPACE_LAYOUT)")
        parser.add_argument("--force", action="store_true",
                            help="take the bucket over from another machine whose lease has not "
                                 "expired (only if that machine is gone: docs/mounts.md)")

    def handle(self, *args: Any, bucket: str, sync: bool, layout: str | None, force: bool,
               **options: Any) -> None:
        state_db_ready()
        try:
            mount = (mount_sync(bucket=bucket) if sync
                     else mount_create(bucket=bucket, layout=layout, force=force)[0])
        except APIError as error:
            raise CommandError(f"{error.default_code}: {error.detail}") from error
        self.stdout.write(json.dumps(MountSerializer(mount).data, default=str))
