from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mounts import services, snapshots
from mounts.management import state_db_ready
from mounts.serializers_snapshots import SnapshotSerializer
from weldr_agent.errors import APIError


class Command(BaseCommand):
    help = ("Take a snapshot of a mounted image workspace exactly as POST "
            "/mounts/{bucket}/snapshots does (freeze, clone, thaw), or list its snapshots.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("bucket")
        parser.add_argument("--name", default="", help="the snapshot's name")
        parser.add_argument("--note", default="", help="a note kept with it")
        parser.add_argument("--durable", action="store_true",
                            help="also make it durable in S3 before answering (zero-RPO sync)")
        parser.add_argument("--list", action="store_true", dest="list_only",
                            help="list the bucket's snapshots instead of taking one")

    def handle(self, *args: Any, bucket: str, name: str, note: str, durable: bool,
               list_only: bool, **options: Any) -> None:
        state_db_ready()
        try:
            if list_only:
                rows = snapshots.snapshot_list(bucket=bucket)
                self.stdout.write(json.dumps(
                    {"snapshots": SnapshotSerializer(rows, many=True).data}))
                return
            row = snapshots.snapshot_create(bucket=bucket, name=name, note=note)
            if durable:
                services.mount_sync(bucket=bucket)
            snapshots.snapshot_created_publish(row)
        except APIError as error:
            raise CommandError(f"{error.default_code}: {error.detail}") from error
        self.stdout.write(json.dumps(SnapshotSerializer(row).data))
