"""The verbs of the mounts app: mount, unmount, sync, reconcile — state database plus machine.

Limits are enforced by the state database (a transaction that counts and inserts, SQLite
IMMEDIATE), operations on one bucket are serialised by a file lock shared with every process
of this machine (agent, manage.py, scripts), and every failure path tears down what it started
so that nothing blocks the next attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from mounts import capabilities, lease, local, replica, steps, system
from mounts.errors import (
    BucketInUse,
    InvalidBucket,
    InvalidLayout,
    LayoutMismatch,
    LayoutUnavailable,
    LeaseLost,
    MountFailed,
    MountLimitReached,
    MountNotFound,
    NotMounted,
    StorageUnavailable,
    SyncFailed,
    UnmountFailed,
)
from mounts.models import Mount
from mounts.validators import validate_bucket_name
from weldr_agent.databases import STATE_DB

logger = logging.getLogger("weldr.mounts")

UnmountGuard = Callable[[str, bool], None]
_guards: list[UnmountGuard] = []


@dataclass
class ForkOps:
    """How a fork (a mount with a `parent`) is synced, removed and reconciled: by
    mounts/snapshots_forks.py, which builds on this module and registers them here."""

    sync: Callable[..., Mount] = lambda *, fork: fork
    remove: Callable[..., None] = lambda *, fork, force: None
    reconcile: Callable[[], dict[str, str]] = dict


forks = ForkOps()


def register_unmount_guard(fn: UnmountGuard) -> None:
    """Register fn(bucket, force): raise a ConflictError to refuse, or stop its things on force.

    Previews and exec register theirs in AppConfig.ready(); every unmount calls them all first.
    """
    if fn not in _guards:
        _guards.append(fn)


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


def workspace_path(bucket: str) -> Path:
    """The live workspace of a mounted bucket; NotMounted (409) when there is none."""
    bucket = validate_bucket_name(bucket)
    mount = Mount.objects.filter(bucket=bucket, status=Mount.Status.MOUNTED).first()
    if mount is None:
        raise NotMounted(f"Bucket {bucket!r} is not mounted; mount it first (POST /mounts).")
    if local.enabled():
        return local.workspace_path(bucket)
    return Path(mount.path)


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


def _paths(mount: Mount) -> system.Paths:
    return system.paths(mount.bucket, mount.layout)


def _layout_decide(p: system.Paths, origin: str, requested: str | None) -> str:
    """The volume's layout, from its record in S3 (never from the workspace's files).

    A new volume gets the request's (or the setting's) and it is recorded before anything
    mounts it. A volume made before the record existed is read once from its metadata
    (steps.volume_layout_legacy: image only where nothing but the agent can have made it) and
    recorded then.
    """
    recorded = None if origin == "formatted" else steps.layout_record_read(p.bucket)
    if recorded is not None:
        volume: str | None = recorded
    elif origin == "formatted":
        volume = None
    else:
        volume = steps.volume_layout_legacy(p.meta_db)
    layout = _layout_choose(p, volume, requested)
    if recorded != layout:
        steps.layout_record_write(p.bucket, layout)
    return layout


def _layout_choose(p: system.Paths, volume: str | None, requested: str | None) -> str:
    """The layout to mount: the volume's own; the request's (or the setting's) for a new one."""
    if volume is None:
        return _layout_new(requested)
    if requested and requested != volume:
        raise LayoutMismatch(f"Bucket {p.bucket!r} holds a workspace with the {volume!r} layout; "
                             f"it cannot be mounted as {requested!r}.")
    if volume == system.IMAGE:
        _image_layout_require(p.bucket)
    return volume


def _layout_new(requested: str | None) -> str:
    """A new volume's layout: the request's, else WORKSPACE_LAYOUT — `files` when that says
    `image` and this machine can make no loop device (an explicit request was refused before
    anything was made: mount_create)."""
    layout = requested or settings.WORKSPACE_LAYOUT
    if layout == system.IMAGE and requested is None and not capabilities.image_layout_available():
        logger.warning("no loop devices here: the new volume gets the files layout")
        return system.FILES
    return layout


def _image_layout_require(bucket: str, *, requested: bool = False) -> None:
    """LayoutUnavailable (409) when the image layout cannot be mounted on this machine."""
    reason = capabilities.loop_devices()
    if reason == capabilities.OK:
        return
    if requested:
        raise LayoutUnavailable(
            f"The image layout needs a loop device and this machine can make none ({reason}). "
            "Ask for the files layout, or leave `layout` out: new volumes get files here.")
    raise LayoutUnavailable(
        f"Bucket {bucket!r} holds an image workspace (an ext4 image), which needs a loop device, "
        f"and this machine can make none ({reason}). Mount it on a machine that offers "
        "/dev/loop-control; its data in S3 is untouched.")


def _image_volume_refuse(bucket: str) -> None:
    """Refuse an image volume before its metadata is restored or anything started, where the
    record says image and no loop device can be had (nothing is then left behind)."""
    if capabilities.image_layout_available():
        return
    if steps.layout_record_read(bucket) == system.IMAGE:
        _image_layout_require(bucket)


def _lease_take(bucket: str, *, force: bool) -> lease.Record | None:
    """The bucket's lease for this machine (local mode has none); the last writer's record."""
    if local.enabled():
        return None
    steps.ensure_bucket(bucket)
    return lease.acquire(bucket, force=force)


def _machine_mount(mount: Mount, requested: str | None = None, *,
                   previous: lease.Record | None = None) -> None:
    """Run the mount procedure for a row in MOUNTING; on failure leave nothing running.

    `previous` is the lease found when it was taken: written by another machine, it means that
    machine wrote the bucket after this one, and this machine's metadata is stale.
    """
    p = system.paths(mount.bucket)
    budget = system.Budget(mount.cache_size_mb, mount.buffer_size_mb)
    if local.enabled():
        # Local mode: "mounted" means the branch directory is restored, present and pinned.
        steps.ensure_bucket(mount.bucket)
        mount.restored = local.branch_open(mount.bucket)
        mount.status, mount.mounted_at, mount.error = Mount.Status.MOUNTED, timezone.now(), ""
        mount.save()
        return
    try:
        steps.ensure_bucket(mount.bucket)
        _image_volume_refuse(mount.bucket)
        if previous is not None and previous.machine != lease.machine_id():
            steps.metadata_set_aside(p, f"machine {previous.machine} wrote the bucket since")
        origin = steps.metadata_prepare(p)
        # A volume made by an older agent: its settings held the S3 keys (steps, system).
        steps.format_secrets_remove(p.meta_db)
        mount.layout = _layout_decide(p, origin, requested)
        fresh = origin == "formatted" or steps.volume_empty(p.meta_db)
        p = _paths(mount)
        mount.save(update_fields=["layout"])
        mount.litestream_pid = steps.litestream_start(p)
        mount.save(update_fields=["litestream_pid"])
        mount.juicefs_pid = steps.juicefs_start(p, budget)
        if mount.layout == system.IMAGE:
            if not p.image.exists():
                steps.image_create(p)
                fresh = True
            steps.image_mount(p)
        if fresh:
            steps.workspace_prepare(p.mount_point)
    except BaseException:
        steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid,
                       grace=10)
        raise
    mount.restored = origin == "restored"
    mount.status = Mount.Status.MOUNTED
    mount.mounted_at = timezone.now()
    mount.error = ""
    mount.save()


def _serving(mount: Mount) -> bool:
    """JuiceFS answers and, for the image layout, the workspace is its ext4, read-write."""
    p = _paths(mount)
    return steps.answers(p.volume_point) and (mount.layout != system.IMAGE
                                              or steps.image_mounted(p))


def _healthy(mount: Mount) -> bool:
    p = _paths(mount)
    if local.enabled():
        return mount.status == Mount.Status.MOUNTED and local.branch_healthy(mount.bucket)
    return (mount.status == Mount.Status.MOUNTED and _serving(mount)
            and steps.owns(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM)))


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
    p = system.paths(bucket)
    with steps.bucket_lock(p, timeout=_lock_timeout()):
        mount = Mount.objects.filter(bucket=bucket).first()
        if mount is not None and mount.parent:  # --- a fork (mounts/snapshots_forks.py) ---
            # Never hand a fork out as the bucket of that name: whoever mounts the bucket would
            # write into the fork's parent's volume.
            from mounts.snapshots_errors import ForkExists

            raise ForkExists(f"{bucket!r} is a fork of {mount.parent!r} mounted here, not a "
                             "bucket; unmount the fork to mount the bucket.")
        if mount is not None and _healthy(mount):
            if layout and not local.enabled() and layout != mount.layout:
                raise LayoutMismatch(f"Bucket {bucket!r} is mounted with the {mount.layout!r} "
                                     f"layout, not {layout!r}.")
            return mount, False
        if mount is not None:
            # Failed, dead or left half-done by a crash: clear it and mount again.
            steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
            mount.delete()
        elif not local.enabled() and steps.leftovers(p):
            # No row, yet mounts, daemons or loop devices of this bucket (a lost state row).
            steps.teardown(p, juicefs_pid=None, litestream_pid=None)
        if layout == system.IMAGE and not local.enabled():
            # Before anything is made: a formatted volume without its layout record and without
            # a replica would be refused by every other machine (a volume, no metadata).
            _image_layout_require(bucket, requested=True)
        mount = _slot_take(bucket)
        leased = False
        try:
            previous = _lease_take(bucket, force=force)
            leased = True
            _machine_mount(mount, layout, previous=previous)
        except BaseException:
            mount.delete()
            if leased:
                lease.release(bucket)
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
        if not local.enabled():
            _lease_confirm(mount)
        if local.enabled():
            local.workspace_sync(bucket)
            mount.synced_at = timezone.now()
        else:
            if mount.layout == system.IMAGE and not steps.image_mounted(_paths(mount)):
                # Its ext4 is gone or read-only after I/O errors: nothing could be synced from
                # it, and the caller must not believe its last writes are durable.
                raise SyncFailed(f"The workspace image of {bucket} is not mounted read-write "
                                 "(see GET /mounts; reconcile remounts it).")
            mount.synced_at = replica.durable(_paths(mount), mount.litestream_pid)
        mount.save(update_fields=["synced_at"])
    return mount


# ---------------------------------------------------------------------------------------------
# Unmount
# ---------------------------------------------------------------------------------------------


def _machine_unmount(mount: Mount, *, force: bool) -> None:
    if local.enabled():
        local.branch_close(mount.bucket)
        return
    p = _paths(mount)
    alive = steps.answers(p.volume_point)
    litestream_alive = steps.owns(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM))
    if mount.layout == system.IMAGE:
        # The ext4 first (sync, fstrim while JuiceFS can still punch the holes, umount, loop
        # device freed): its last writes then are ordinary JuiceFS writes, flushed below.
        steps.image_release(p, trim=alive)
    if alive and litestream_alive:
        replica.durable(p, mount.litestream_pid)
    steps.umount(p.volume_point, lazy=not alive)
    steps.pid_stop(mount.juicefs_pid, system.daemon_tag(p, system.JUICEFS), grace=30)
    if litestream_alive:
        # JuiceFS closes its session on unmount: that last transaction must reach S3 too.
        steps.litestream_sync(p, mount.litestream_pid)
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)


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
        for guard in list(_guards):
            guard(bucket, force)
        mount.status = Mount.Status.UNMOUNTING
        mount.save(update_fields=["status"])
        try:
            _machine_unmount(mount, force=force)
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
    # Only this machine's own record is marked released; another machine's is left alone.
    if not local.enabled():
        lease.release(mount.bucket)


def mount_remove_all(*, deadline: float) -> None:
    """Unmount everything in parallel (shutdown), each with its final sync, before `deadline`."""
    buckets = list(Mount.objects.values_list("bucket", flat=True))

    def remove(bucket: str) -> None:
        try:
            mount_remove(bucket=bucket, force=True)
        except Exception:
            logger.exception("unmount of %s at shutdown failed", bucket)
        finally:
            close_old_connections()

    if not buckets:
        return
    pool = ThreadPoolExecutor(max_workers=len(buckets))
    futures = [pool.submit(remove, bucket) for bucket in buckets]
    _done, pending = wait(futures, timeout=max(deadline - time.monotonic(), 1))
    if pending:
        logger.error("%d unmount(s) did not finish before the shutdown deadline", len(pending))
    pool.shutdown(wait=False)


# ---------------------------------------------------------------------------------------------
# The lease: renewed while mounted, and a mount that lost it stops writing
# ---------------------------------------------------------------------------------------------


def _lease_confirm(mount: Mount) -> None:
    """Renew the lease before a sync: a machine that lost it never writes the bucket again."""
    try:
        lease.renew(mount.bucket)
    except LeaseLost as error:
        _fence(mount, str(error.detail))
        raise
    except StorageUnavailable as error:
        # The sync itself then fails (sync_failed); fencing is the renewal loop's decision.
        logger.error("lease of %s not renewed before a sync: %s", mount.bucket, error)


def _fence(mount: Mount, reason: str) -> None:
    """Stop every writer of the bucket on this machine, now, and say why on the mount's row.

    Previews and commands in it are stopped (the guards, forced), then the ext4, JuiceFS and
    Litestream (teardown): no more blocks, metadata or replica pages go to S3 from here. What
    was staged stays in this machine's cache folder; the bucket belongs to its new holder.
    """
    logger.error("LEASE LOST: %s Stopping this machine's writers of %s (status lease_lost).",
                 reason, mount.bucket)
    for guard in list(_guards):
        try:
            guard(mount.bucket, True)
        except Exception:
            logger.exception("stopping the users of %s failed", mount.bucket)
    p = _paths(mount)
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid,
                   grace=10)
    lease.forget(mount.bucket)
    Mount.objects.filter(pk=mount.pk).update(status=Mount.Status.LEASE_LOST, error=reason,
                                             juicefs_pid=None, litestream_pid=None)


def _renew_one(bucket: str) -> str:
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
            _fence(mount, str(error.detail))
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
            _fence(mount, f"the lease could not be renewed for {silent:.0f} s (S3 unreachable); "
                          "another machine may take the bucket over after "
                          f"{settings.MOUNT_LEASE_TTL_SECONDS} s.")
            return "expired"
        return "unreachable"


def mount_leases_renew() -> dict[str, str]:
    """Renew the lease of every bucket mounted (or being mounted) on this machine, side by side
    (S3 timing out for one must not delay the others past their expiry); fence those lost.
    Run every MOUNT_LEASE_RENEW_SECONDS by mounts.renewal."""
    if local.enabled():
        return {}
    live = set(Mount.objects.filter(status__in=[Mount.Status.MOUNTED,
                                                Mount.Status.UNMOUNTING])
               .filter(parent="")  # a fork holds no lease (mounts/snapshots_forks.py)
               .values_list("bucket", flat=True))
    buckets = sorted(live | set(lease.held()))
    if not buckets:
        return {}

    def renew(bucket: str) -> str:
        try:
            return _renew_one(bucket)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=len(buckets)) as pool:
        return dict(zip(buckets, pool.map(renew, buckets), strict=True))


# ---------------------------------------------------------------------------------------------
# Reconcile
# ---------------------------------------------------------------------------------------------


def _reconcile_lease(mount: Mount) -> tuple[bool, lease.Record | None]:
    """(kept, last writer) for a mount the state database has: its own lease (an agent restarted
    on the same volume) or a free one is taken back; another machine's fences the mount."""
    if local.enabled():
        return True, None
    try:
        return True, lease.acquire(mount.bucket)
    except BucketInUse as error:
        _fence(mount, str(error.detail))
        return False, None
    except StorageUnavailable as error:
        # Unconfirmed: the renewal loop stops the writers if its first renewal fails too.
        logger.error("LEASE NOT CONFIRMED for %s at start-up: %s", mount.bucket, error)
        lease.track_unconfirmed(mount.bucket)
        return True, None


def _reconcile_one(mount: Mount) -> str:
    if mount.status == Mount.Status.LEASE_LOST:
        # Stopped for good: mounting it again (POST /mounts) takes the lease when it is free.
        return "lease lost"
    p = _paths(mount)
    kept, previous = _reconcile_lease(mount)
    if not kept:
        return "lease lost"
    stale = previous is not None and previous.machine != lease.machine_id()
    if _healthy(mount) and not stale:
        # A JuiceFS server restarted by its watchdog protected itself again (-1000).
        steps.oom_score_adjust(steps.daemons(p, system.JUICEFS))
        return "ok"
    if mount.status == Mount.Status.MOUNTED and _serving(mount) and not stale:
        # JuiceFS serves, Litestream died: restart it on the same database.
        steps.pid_stop(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM),
                       grace=10)
        mount.litestream_pid = steps.litestream_start(p)
        mount.save(update_fields=["litestream_pid"])
        return "litestream restarted"
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
    mount.status, mount.juicefs_pid, mount.litestream_pid = Mount.Status.MOUNTING, None, None
    mount.save()
    try:
        _machine_mount(mount, mount.layout, previous=previous)
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
