"""Port leases: the database decides which bucket holds a port, never a look-then-write.

One lease per bucket and one bucket per port, both unique constraints: twenty starts racing
for the last port get one winner and nineteen clear 409s (docs/previews.md).
"""

from __future__ import annotations

import random

from django.conf import settings
from django.db import IntegrityError, transaction

from previews.errors import NoFreePort, PortInUse, PreviewExists
from previews.models import PortLease


def _candidates(port: int | None, skip: set[int]) -> list[int]:
    """Ports to try: the lowest free one first, then the other free ones in random order.

    The lease insert decides; the order only keeps twenty racing starts from all trying the
    same port (each loser costs a write transaction).
    """
    if port is not None:
        return [port]
    taken = set(PortLease.objects.values_list("port", flat=True)) | skip
    free = [p for p in range(settings.PREVIEW_PORT_MIN, settings.PREVIEW_PORT_MAX + 1)
            if p not in taken]
    rest = free[1:]
    random.shuffle(rest)
    return free[:1] + rest


def port_lease_acquire(*, bucket: str, port: int | None, skip: set[int]) -> PortLease:
    """Lease `port`, or a free port of 3000-3019; one lease per bucket."""
    for _ in range(3):
        for candidate in _candidates(port, skip):
            try:
                with transaction.atomic(using="default"):
                    return PortLease.objects.create(port=candidate, bucket=bucket)
            except IntegrityError:
                # Which constraint failed decides the error; the insert itself was the check.
                if PortLease.objects.filter(bucket=bucket).exists():
                    raise PreviewExists() from None
        if port is not None:
            raise PortInUse()
    # Three rounds over every port that looked free, all taken by the time we tried.
    raise NoFreePort()


def port_lease_release(*, bucket: str, port: int) -> None:
    PortLease.objects.filter(bucket=bucket, port=port).delete()
