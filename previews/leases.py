"""Port leases: the database decides which bucket holds a port.

One lease per bucket and one bucket per port, both unique constraints. A start looks for the
lowest free port and inserts its lease in one write transaction of the state database, whose
transactions take its write lock at BEGIN (`transaction_mode` IMMEDIATE): twenty racing starts
queue for the lock and each takes the lowest port still free, on its first try; the twenty-first
gets a clear 503 (docs/previews.md).
"""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, transaction

from previews.errors import NoFreePort, PortInUse, PreviewExists
from previews.models import PortLease

# Inserts that lost a race anyway (a database whose transactions do not lock at BEGIN).
ATTEMPTS = 3


def _lowest_free(skip: set[int]) -> int:
    taken = set(PortLease.objects.values_list("port", flat=True)) | skip
    for port in range(settings.PREVIEW_PORT_MIN, settings.PREVIEW_PORT_MAX + 1):
        if port not in taken:
            return port
    raise NoFreePort()


def port_lease_acquire(*, bucket: str, port: int | None, skip: set[int]) -> PortLease:
    """Lease `port`, or the lowest free port of 3000-3019 not in `skip`; one lease per bucket."""
    for _ in range(ATTEMPTS):
        try:
            with transaction.atomic(using="default"):
                return PortLease.objects.create(
                    port=port if port is not None else _lowest_free(skip), bucket=bucket)
        except IntegrityError:
            # Which constraint failed decides the error; the insert itself was the check.
            if PortLease.objects.filter(bucket=bucket).exists():
                raise PreviewExists() from None
            if port is not None:
                raise PortInUse() from None
    raise NoFreePort()


def port_lease_release(*, bucket: str, port: int) -> None:
    PortLease.objects.filter(bucket=bucket, port=port).delete()
