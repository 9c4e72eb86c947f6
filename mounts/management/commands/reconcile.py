from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from mounts.management import state_db_ready
from mounts.services import mount_reconcile


class Command(BaseCommand):
    help = ("Compare the state database with the machine (/proc/mounts, live processes): "
            "remount or mark failed what died, clean up what is stale. Prints the outcome.")

    def handle(self, *args: Any, **options: Any) -> None:
        state_db_ready()
        self.stdout.write(json.dumps(mount_reconcile(), sort_keys=True))
