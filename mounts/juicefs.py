"""JuiceFS volumes as the machine side of mounts (the strategy of WORKSPACE_MODE=mount).

A bucket holds one JuiceFS volume: its metadata is a SQLite file replicated by Litestream, its
workspace either the mount itself (`files`) or an ext4 image in it on a loop device (`image`).
Mounting takes the bucket's lease (mounts/fencing.py); the steps are in mounts/steps/.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from mounts import capabilities, fencing, lease, replica, steps, system
from mounts.errors import LayoutMismatch, LayoutUnavailable, SyncFailed
from mounts.models import Mount

logger = logging.getLogger("weldr.mounts")


def _paths(mount: Mount) -> system.Paths:
    return system.paths(mount.bucket, mount.layout)


# ---------------------------------------------------------------------------------------------
# Layout: decided from the volume's record in S3, never from the workspace's files
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The strategy
# ---------------------------------------------------------------------------------------------


def serving(mount: Mount) -> bool:
    """JuiceFS answers and, for the image layout, the workspace is its ext4, read-write."""
    p = _paths(mount)
    # Else asking a mount whose JuiceFS is all gone could wait forever.
    steps.orphan_abort(p, mount.juicefs_pid)
    return steps.answers(p.volume_point) and (mount.layout != system.IMAGE
                                              or steps.image_mounted(p))


class JuiceFSMachine:
    """A JuiceFS volume per bucket, its metadata replicated by Litestream, under a lease."""

    layouts = True

    def workspace(self, mount: Mount) -> Path:
        return Path(mount.path)

    def layout_request_check(self, bucket: str, layout: str | None) -> None:
        if layout == system.IMAGE:
            # Before anything is made: a formatted volume without its layout record and without
            # a replica would be refused by every other machine (a volume, no metadata).
            _image_layout_require(bucket, requested=True)

    def layout_mounted_check(self, mount: Mount, layout: str | None) -> None:
        if layout and layout != mount.layout:
            raise LayoutMismatch(f"Bucket {mount.bucket!r} is mounted with the {mount.layout!r} "
                                 f"layout, not {layout!r}.")

    def leftovers_clear(self, bucket: str) -> None:
        p = system.paths(bucket)
        if steps.leftovers(p):
            # No row, yet mounts, daemons or loop devices of this bucket (a lost state row).
            steps.teardown(p, juicefs_pid=None, litestream_pid=None)

    def lease_take(self, bucket: str, *, force: bool) -> lease.Record | None:
        return fencing.lease_take(bucket, force=force)

    def lease_release(self, bucket: str) -> None:
        # Only this machine's own record is marked released; another machine's is left alone.
        lease.release(bucket)

    def lease_reconcile(self, mount: Mount) -> tuple[bool, lease.Record | None]:
        return fencing.lease_reconcile(mount)

    def leases_renew(self) -> dict[str, str]:
        return fencing.leases_renew()

    def mount(self, mount: Mount, requested: str | None, *,
              previous: lease.Record | None) -> None:
        """Run the mount procedure for a row in MOUNTING; on failure leave nothing running.

        `previous` is the lease found when it was taken: written by another machine, it means
        that machine wrote the bucket after this one, and this machine's metadata is stale.
        """
        p = system.paths(mount.bucket)
        budget = system.Budget(mount.cache_size_mb, mount.buffer_size_mb)
        try:
            steps.ensure_bucket(mount.bucket)
            _image_volume_refuse(mount.bucket)
            if previous is not None and previous.machine != lease.machine_id():
                steps.metadata_set_aside(p, f"machine {previous.machine} wrote the bucket since")
            origin = steps.metadata_prepare(p)
            # Taken (and removed) whatever happens next: it vouches for this mount only.
            clean = steps.image_clean_take(p)
            # A volume made by an older agent: its settings held the S3 keys (steps, system).
            steps.format_secrets_remove(p.meta_db)
            mount.layout = _layout_decide(p, origin, requested)
            fresh = origin == "formatted" or steps.volume_empty(p.meta_db)
            p = _paths(mount)
            mount.save(update_fields=["layout"])
            self._daemons_start(mount, p, budget)
            if mount.layout == system.IMAGE:
                if not p.image.exists():
                    steps.image_create(p)
                    fresh = True
                # e2fsck only where this machine's clean unmount is not the image's last write.
                steps.image_mount(p, check=not (origin == "local" and clean is not None
                                                 and clean == steps.image_identity(p)))
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

    def _daemons_start(self, mount: Mount, p: system.Paths, budget: system.Budget) -> None:
        """Litestream and JuiceFS started side by side, then each waited for (a remount
        spends most of its time waiting for the two: docs/mounts.md, "Remount").

        Litestream is spawned first and is ready within tens of milliseconds, long before
        JuiceFS's first transaction (its session) could reach a checkpoint: Litestream catches
        up on WAL frames written before it looked, as after any of its sync intervals.
        """
        litestream = steps.litestream_spawn(p)
        mount.litestream_pid = litestream.pid
        juicefs = steps.juicefs_spawn(p, budget)
        mount.juicefs_pid = juicefs.pid
        steps.litestream_ready(p, litestream)
        mount.save(update_fields=["litestream_pid"])
        steps.juicefs_ready(p, juicefs)

    def healthy(self, mount: Mount) -> bool:
        p = _paths(mount)
        return (mount.status == Mount.Status.MOUNTED and serving(mount)
                and steps.owns(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM)))

    def repair(self, mount: Mount) -> str | None:
        p = _paths(mount)
        if self.healthy(mount):
            # A JuiceFS server restarted by its watchdog protected itself again (-1000).
            steps.oom_score_adjust(steps.daemons(p, system.JUICEFS))
            return "ok"
        if mount.status == Mount.Status.MOUNTED and serving(mount):
            # JuiceFS serves, Litestream died: restart it on the same database.
            steps.pid_stop(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM),
                           grace=10)
            mount.litestream_pid = steps.litestream_start(p)
            mount.save(update_fields=["litestream_pid"])
            return "litestream restarted"
        return None

    def sync(self, mount: Mount) -> datetime:
        fencing.lease_confirm(mount)
        if mount.layout == system.IMAGE and not steps.image_mounted(_paths(mount)):
            # Its ext4 is gone or read-only after I/O errors: nothing could be synced from
            # it, and the caller must not believe its last writes are durable.
            raise SyncFailed(f"The workspace image of {mount.bucket} is not mounted read-write "
                             "(see GET /mounts; reconcile remounts it).")
        return replica.durable(_paths(mount), mount.litestream_pid)

    def unmount(self, mount: Mount, *, force: bool) -> None:
        p = _paths(mount)
        steps.orphan_abort(p, mount.juicefs_pid)
        alive = steps.answers(p.volume_point)
        litestream_alive = steps.owns(mount.litestream_pid,
                                      system.daemon_tag(p, system.LITESTREAM))
        clean = None
        if mount.layout == system.IMAGE:
            healthy_ext4 = alive and steps.image_mounted(p)
            # The ext4 first (sync, fstrim while JuiceFS can still punch the holes, umount, loop
            # device freed): its last writes then are ordinary JuiceFS writes, flushed below.
            steps.image_release(p, trim=alive)
            if healthy_ext4 and not steps.loop_devices(p.image):
                # The kernel unmounted a read-write, error-free ext4 (errors=remount-ro) and let
                # go of the image: its superblock says clean, as e2fsck -p would read it.
                clean = steps.image_identity(p)
        if alive and litestream_alive:
            replica.durable(p, mount.litestream_pid)
        steps.umount(p.volume_point, lazy=not alive)
        steps.pid_stop(mount.juicefs_pid, system.daemon_tag(p, system.JUICEFS), grace=30)
        if litestream_alive:
            # JuiceFS closes its session on unmount: that last transaction must reach S3 too.
            steps.litestream_sync(p, mount.litestream_pid)
        steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
        if clean is not None and alive and litestream_alive:
            # Only after every step succeeded: an unmount that failed anywhere leaves no record.
            steps.image_clean_record(p, clean)
