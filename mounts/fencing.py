"""The lease of a JuiceFS mount: taken when mounting, renewed while mounted, confirmed before a
sync, and a mount that lost it stops writing (docs/mounts.md, "One writer per bucket").

mounts/lease.py reads and writes the lease object in S3; this module decides what a lost or
unrenewable lease means for the mount on this machine (fence: stop every writer, now).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connections

from mounts import guards, lease, steps, system
from mounts.errors import BucketInUse, LeaseLost, StorageUnavailable
from mounts.models import Mount

logger = logging.getLogger("weldr.mounts")


def lease_take(bucket: str, *, force: bool) -> lease.Record | None:
    """The bucket's lease for this machine; the last writer's record."""
    steps.ensure_bucket(bucket)
    return lease.acquire(bucket, force=force)


def lease_confirm(mount: Mount) -> None:
    """Renew the lease before a sync: a machine that lost it never writes the bucket again."""
    try:
        lease.renew(mount.bucket)
    except LeaseLost as error:
        fence(mount, str(error.detail))
        raise
    except StorageUnavailable as error:
        # The sync itself then fails (sync_failed); fencing is the renewal loop's decision.
        logger.error("lease of %s not renewed before a sync: %s", mount.bucket, error)


def fence(mount: Mount, reason: str) -> None:
    """Stop every writer of the bucket on this machine, now, and say why on the mount's row.

    Previews and commands in it are stopped (the guards, forced), then the ext4, JuiceFS and
    Litestream (teardown): no more blocks, metadata or replica pages go to S3 from here. What
    was staged stays in this machine's cache folder; the bucket belongs to its new holder.
    """
    logger.error("LEASE LOST: %s Stopping this machine's writers of %s (status lease_lost).",
                 reason, mount.bucket)
    for guard in list(guards.registered):
        try:
            guard(mount.bucket, True)
        except Exception:
            logger.exception("stopping the users of %s failed", mount.bucket)
    p = system.paths(mount.bucket, mount.layout)
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid,
                   grace=10)
    lease.forget(mount.bucket)
    Mount.objects.filter(pk=mount.pk).update(status=Mount.Status.LEASE_LOST, error=reason,
                                             juicefs_pid=None, litestream_pid=None)


def renew_one(bucket: str) -> str:
    mount = Mount.objects.filter(bucket=bucket).first()
    if mount is None:
        # Held by this process, yet no row mounts it (its row was removed): nothing writes it.
        lease.release(bucket)
        return "released"
    try:
        lease.renew(bucket)
        return "renewed"
    except LeaseLost as error:
        if mount.status != Mount.Status.LEASE_LOST:
            fence(mount, str(error.detail))
        return "lost"
    except StorageUnavailable as error:
        silent = lease.silent_for(bucket)
        if silent is None:
            # Never confirmed by this process (mounted by manage.py): assume it is due.
            silent = float(settings.MOUNT_LEASE_TTL_SECONDS)
        # Stop before the lease can expire: from then on another machine may take it.
        limit = settings.MOUNT_LEASE_TTL_SECONDS - settings.MOUNT_LEASE_RENEW_SECONDS
        logger.error("LEASE NOT RENEWED for %s (%.0f s since the last renewal; the writers stop "
                     "at %.0f s): %s", bucket, silent, limit, error)
        if silent >= limit and mount.status != Mount.Status.LEASE_LOST:
            fence(mount, f"the lease could not be renewed for {silent:.0f} s (S3 unreachable); "
                         "another machine may take the bucket over after "
                         f"{settings.MOUNT_LEASE_TTL_SECONDS} s.")
            return "expired"
        return "unreachable"


def leases_renew() -> dict[str, str]:
    """Renew the lease of every bucket mounted (or being mounted) on this machine, side by side
    (S3 timing out for one must not delay the others past their expiry); fence those lost."""
    live = set(Mount.objects.filter(status__in=[Mount.Status.MOUNTED,
                                                Mount.Status.UNMOUNTING])
               .filter(parent="")  # a fork holds no lease (mounts/snapshots_forks.py)
               .values_list("bucket", flat=True))
    buckets = sorted(live | set(lease.held()))
    if not buckets:
        return {}

    def renew(bucket: str) -> str:
        try:
            return renew_one(bucket)
        finally:
            # Its thread ends with the pool: its database connections are closed here, not
            # left open until the garbage collector finds them (two open files and a page cache
            # each, per bucket and renewal: +20 files and ~1.5 MiB every 30 s with 5 mounts).
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(buckets)) as pool:
        return dict(zip(buckets, pool.map(renew, buckets), strict=True))


def lease_reconcile(mount: Mount) -> tuple[bool, lease.Record | None]:
    """(kept, last writer) for a mount the state database has: its own lease (an agent restarted
    on the same volume) or a free one is taken back; another machine's fences the mount."""
    try:
        return True, lease.acquire(mount.bucket)
    except BucketInUse as error:
        fence(mount, str(error.detail))
        return False, None
    except StorageUnavailable as error:
        # Unconfirmed: the renewal loop stops the writers if its first renewal fails too.
        logger.error("LEASE NOT CONFIRMED for %s at start-up: %s", mount.bucket, error)
        lease.track_unconfirmed(mount.bucket)
        return True, None
