"""The verbs of the mounts app: mount, unmount, sync, reconcile — state database plus machine.

Limits are enforced by the state database (a transaction that counts and inserts, SQLite
IMMEDIATE), operations on one bucket are serialised by a file lock shared with every process
of this machine (agent, manage.py, scripts), and every failure path tears down what it started
so that nothing blocks the next attempt.

What "mounted" means on this machine is a strategy (mounts/machine.py) WORKSPACE_MODE names:
JuiceFS volumes under a lease (mounts/juicefs.py, mounts/fencing.py) or local branch
directories (mounts/local.py). The verbs here are the same for both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connections, transaction

from mounts import guards, lease, steps, system
from mounts.errors import (
    InvalidBucket,
    InvalidLayout,
    LayoutMismatch,
    LayoutUnavailable,
    MountFailed,
    MountLimitReached,
    MountNotFound,
    NotMounted,
    StorageUnavailable,
    UnmountFailed,
)
from mounts.juicefs import JuiceFSMachine
from mounts.machine import LocalMachine, Machine
from mounts.models import Mount
from mounts.validators import validate_bucket_name
from weldr_agent.databases import STATE_DB
from weldr_agent.prepared import Prepared

logger = logging.getLogger("weldr.mounts")


@dataclass
class ForkOps:
    """How a fork (a mount with a `parent`) is synced, removed and reconciled: by
    mounts/snapshots_forks.py, which builds on this module and registers them here."""

    sync: Callable[..., Mount] = lambda *, fork: fork
    remove: Callable[..., None] = lambda *, fork, force: None
    reconcile: Callable[[], dict[str, str]] = dict


forks = ForkOps()


# WORKSPACE_MODE -> the machine side of every verb (mounts/machine.py).
_MACHINES: dict[str, Machine] = {"mount": JuiceFSMachine(), "local": LocalMachine()}


def workspace_machine() -> Machine:
    """The strategy of this machine's workspaces, as WORKSPACE_MODE says now."""
    return _MACHINES[settings.WORKSPACE_MODE]


def _lock_timeout() -> float:
    # Waiting for a mount or an unmount of the same bucket: each takes at most this long.
    return float(settings.MOUNT_TIMEOUT_SECONDS * 2)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def mount_get(*, bucket: str) -> Mount:
    bucket = validate_bucket_name(bucket)
    mount = Mount.objects.filter(bucket=bucket).first()
    if mount is None:
        raise MountNotFound(f"Bucket {bucket!r} is not mounted.")
    return mount


# Every POST /exec looks its bucket up: compiled once (weldr_agent/prepared.py).
_mounted = Prepared(Mount, lambda bucket: Mount.objects.filter(
    bucket=bucket, status=Mount.Status.MOUNTED), "bucket")


def workspace_path(bucket: str) -> Path:
    """The live workspace of a mounted bucket; NotMounted (409) when there is none."""
    bucket = validate_bucket_name(bucket)
    mount = _mounted.first(bucket=bucket)
    if mount is None:
        raise NotMounted(f"Bucket {bucket!r} is not mounted; mount it first (POST /mounts).")
    return workspace_machine().workspace(mount)


# ---------------------------------------------------------------------------------------------
# Mount
# ---------------------------------------------------------------------------------------------


def _slot_take(bucket: str) -> Mount:
    """Insert the bucket's row if a slot is free: one transaction counts and inserts."""
    with transaction.atomic(using=STATE_DB):
        active = Mount.objects.count()
        if active >= settings.MAX_MOUNTS:
            raise MountLimitReached(
                f"{active} of {settings.MAX_MOUNTS} mounts are active; unmount one first."
            )
        budget = system.budget(active + 1)
        return Mount.objects.create(bucket=bucket, status=Mount.Status.MOUNTING,
                                    cache_size_mb=budget.cache_size_mb,
                                    buffer_size_mb=budget.buffer_size_mb)


def _healthy(mount: Mount) -> bool:
    """The mount serves its workspace as this machine's strategy understands it."""
    return workspace_machine().healthy(mount)


def mount_create(*, bucket: str, layout: str | None = None,
                 force: bool = False) -> tuple[Mount, bool]:
    """Mount a bucket at WORKSPACE_BASE/{bucket}; (mount, True) when mounted now.

    `layout` (files | image) is for a new volume; an existing volume keeps its own, and asking
    for the other one is 409 layout_mismatch. None: the volume's own, else WORKSPACE_LAYOUT.
    Mounting takes the bucket's lease: 409 bucket_in_use while another machine holds it,
    unless `force` (an operator's takeover: docs/mounts.md, "One writer per bucket").
    """
    bucket = validate_bucket_name(bucket)
    if layout is not None and layout not in system.LAYOUTS:
        raise InvalidLayout(f"Unknown layout {layout!r}; one of {', '.join(system.LAYOUTS)}.")
    p, machine = system.paths(bucket), workspace_machine()
    with steps.bucket_lock(p, timeout=_lock_timeout()):
        mount = Mount.objects.filter(bucket=bucket).first()
        if mount is not None and mount.parent:  # --- a fork (mounts/snapshots_forks.py) ---
            # Never hand a fork out as the bucket of that name: whoever mounts the bucket would
            # write into the fork's parent's volume.
            from mounts.snapshots_errors import ForkExists

            raise ForkExists(f"{bucket!r} is a fork of {mount.parent!r} mounted here, not a "
                             "bucket; unmount the fork to mount the bucket.")
        if mount is not None and machine.healthy(mount):
            machine.layout_mounted_check(mount, layout)
            return mount, False
        if mount is not None:
            # Failed, dead or left half-done by a crash: clear it and mount again.
            steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
            mount.delete()
        else:
            machine.leftovers_clear(bucket)
        machine.layout_request_check(bucket, layout)
        mount = _slot_take(bucket)
        leased = False
        try:
            previous = machine.lease_take(bucket, force=force)
            leased = True
            machine.mount(mount, layout, previous=previous)
        except BaseException:
            mount.delete()
            if leased:
                _lease_release(mount)
            raise
    logger.info("mounted %s at %s (restored=%s)", bucket, mount.path, mount.restored)
    return mount, True


def mount_ensure(*, bucket: str) -> Mount:
    """The bucket's mount, mounting it first when needed (workflows call this)."""
    mount, _created = mount_create(bucket=bucket)
    return mount


# ---------------------------------------------------------------------------------------------
# Durability
# ---------------------------------------------------------------------------------------------


def mount_sync(*, bucket: str) -> Mount:
    """Make every write so far durable in S3 — staged blocks and metadata — then return."""
    bucket = validate_bucket_name(bucket)
    p = system.paths(bucket)
    with steps.bucket_lock(p, timeout=_lock_timeout()):
        mount = Mount.objects.filter(bucket=bucket, status=Mount.Status.MOUNTED).first()
        if mount is None:
            raise MountNotFound(f"Bucket {bucket!r} is not mounted.")
        if mount.parent:  # a fork: its writes are its parent volume's
            return forks.sync(fork=mount)
        mount.synced_at = workspace_machine().sync(mount)
        mount.save(update_fields=["synced_at"])
    return mount


# ---------------------------------------------------------------------------------------------
# Unmount
# ---------------------------------------------------------------------------------------------


def mount_remove(*, bucket: str, force: bool = False) -> None:
    """Unmount a bucket: guards, flush, final Litestream sync, stop, umount, free the slot."""
    bucket = validate_bucket_name(bucket)
    p = system.paths(bucket)
    with steps.bucket_lock(p, timeout=_lock_timeout()):
        mount = Mount.objects.filter(bucket=bucket).first()
        if mount is None:
            raise MountNotFound(f"Bucket {bucket!r} is not mounted.")
        if mount.parent:  # a fork: no JuiceFS, Litestream or lease of its own
            forks.remove(fork=mount, force=force)
            return
        for guard in list(guards.registered):
            guard(bucket, force)
        mount.status = Mount.Status.UNMOUNTING
        mount.save(update_fields=["status"])
        try:
            workspace_machine().unmount(mount, force=force)
        except Exception as error:
            # Whatever failed, the machine is torn down; the row says what went wrong.
            steps.teardown(p, juicefs_pid=mount.juicefs_pid,
                           litestream_pid=mount.litestream_pid)
            mount.delete()
            _lease_release(mount)
            raise UnmountFailed(f"Unmounted {bucket}, but not cleanly: {error}") from error
        mount.delete()
        _lease_release(mount)
    logger.info("unmounted %s", bucket)


def _lease_release(mount: Mount) -> None:
    workspace_machine().lease_release(mount.bucket)


def mount_remove_all(*, deadline: float) -> None:
    """Unmount everything in parallel (shutdown), each with its final sync, before `deadline`."""
    buckets = list(Mount.objects.values_list("bucket", flat=True))

    def remove(bucket: str) -> None:
        try:
            mount_remove(bucket=bucket, force=True)
        except Exception:
            logger.exception("unmount of %s at shutdown failed", bucket)
        finally:
            connections.close_all()  # its thread ends with the pool

    if not buckets:
        return
    pool = ThreadPoolExecutor(max_workers=len(buckets))
    futures = [pool.submit(remove, bucket) for bucket in buckets]
    _done, pending = wait(futures, timeout=max(deadline - time.monotonic(), 1))
    if pending:
        logger.error("%d unmount(s) did not finish before the shutdown deadline", len(pending))
    pool.shutdown(wait=False)


# ---------------------------------------------------------------------------------------------
# The lease: renewed while mounted, and a mount that lost it stops writing (mounts/fencing.py)
# ---------------------------------------------------------------------------------------------


def mount_leases_renew() -> dict[str, str]:
    """Renew the lease of every bucket mounted (or being mounted) on this machine; fence those
    lost. Run every MOUNT_LEASE_RENEW_SECONDS by mounts.renewal."""
    return workspace_machine().leases_renew()


# ---------------------------------------------------------------------------------------------
# Reconcile
# ---------------------------------------------------------------------------------------------


def _reconcile_one(mount: Mount) -> str:
    if mount.status == Mount.Status.LEASE_LOST:
        # Stopped for good: mounting it again (POST /mounts) takes the lease when it is free.
        return "lease lost"
    p, machine = system.paths(mount.bucket, mount.layout), workspace_machine()
    kept, previous = machine.lease_reconcile(mount)
    if not kept:
        return "lease lost"
    stale = previous is not None and previous.machine != lease.machine_id()
    repaired = None if stale else machine.repair(mount)
    if repaired is not None:
        return repaired
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
    mount.status, mount.juicefs_pid, mount.litestream_pid = Mount.Status.MOUNTING, None, None
    mount.save()
    try:
        machine.mount(mount, mount.layout, previous=previous)
    except (MountFailed, StorageUnavailable, LayoutMismatch, LayoutUnavailable,
            OSError) as error:
        mount.status, mount.error = Mount.Status.FAILED, str(error)
        mount.juicefs_pid = mount.litestream_pid = None
        mount.save()
        # Nothing writes the bucket from here: another machine may have it.
        _lease_release(mount)
        return "failed"
    return "remounted"


def mount_reconcile() -> dict[str, str]:
    """Compare the state database with the machine; remount or mark failed what died."""
    outcome = {}
    for mount in Mount.objects.filter(parent=""):  # forks: after their parents, below
        p = system.paths(mount.bucket)
        lock = steps.try_bucket_lock(p)
        if lock is None:
            outcome[mount.bucket] = "busy"
            continue
        try:
            mount.refresh_from_db()
            outcome[mount.bucket] = _reconcile_one(mount)
        except Mount.DoesNotExist:
            outcome[mount.bucket] = "gone"
        finally:
            lock.__exit__(None, None, None)
    outcome.update(forks.reconcile())
    _stale_clean(set(outcome))
    return outcome


def _stale_clean(known: set[str]) -> None:
    """Stop daemons and detach mounts of this machine's buckets that no row accounts for."""
    bases = [str(settings.WORKSPACE_BASE) + "/", str(settings.WELDR_ENV_VOL / "volumes") + "/"]
    candidates = {point[len(base):] for point in steps.mount_table() for base in bases
                  if point.startswith(base)}
    candidates |= {config.name[len("litestream-"):-len(".yml")]
                   for config in settings.WELDR_ENV_VOL.glob("litestream-*.yml")}
    for bucket in sorted(candidates - known):
        try:
            validate_bucket_name(bucket)
        except InvalidBucket:
            continue
        p = system.paths(bucket)
        if steps.leftovers(p):
            logger.warning("cleaning up stale daemons, mounts and loop devices of %s", bucket)
            steps.teardown(p, juicefs_pid=None, litestream_pid=None)
