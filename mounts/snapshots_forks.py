"""Forks: a new, writable workspace from a snapshot, beside the bucket's own (docs/snapshots.md).

A fork's image is a `juicefs clone` of the snapshot inside the parent bucket's volume
(`.weldr/forks/{name}/.weldr/workspace.ext4`), loop-mounted at `WORKSPACE_BASE/{name}`; its row in
the state database names the parent. It takes a slot like any mount, has its own sandbox,
previews and commands (they find it by its name, as they find a bucket), and shares the parent's
JuiceFS and Litestream: its writes are the parent volume's writes, durable with it.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import ExitStack
from typing import Any

from django.db import transaction
from django.utils import timezone

from mounts import guards, services, snapshots, snapshots_store, steps, system
from mounts.errors import MountBusy
from mounts.models import Mount
from mounts.snapshots_errors import ForkExists, ForkNotFound
from mounts.validators import validate_bucket_name
from weldr_agent.databases import STATE_DB

logger = logging.getLogger("weldr.snapshots")


def _paths(fork: Mount) -> system.Paths:
    return system.fork_paths(fork.parent, fork.bucket)


def fork_create(*, bucket: str, snapshot_id: str, name: str) -> Mount:
    """Mount a new workspace `name` from a snapshot of `bucket`; it takes one slot."""
    bucket = validate_bucket_name(bucket)
    name = validate_bucket_name(name)
    parent, p = snapshots._mounted_image(bucket)
    if parent.parent:
        raise ForkExists(f"{bucket!r} is a fork; fork its parent {parent.parent!r} instead.")
    with snapshots._lock(p):
        sidecar = snapshots._sidecar_get(p, snapshot_id)
        with transaction.atomic(using=STATE_DB):
            if Mount.objects.filter(bucket=name).exists():
                raise ForkExists(f"A workspace named {name!r} is mounted already.")
            fork = services._slot_take(name)
            Mount.objects.filter(pk=fork.pk).update(parent=bucket, layout=system.IMAGE)
        fork.refresh_from_db()
        fp = _paths(fork)
        try:
            fp.image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            snapshots_store.clone(p.volume_dir, system.snapshot_image(p, sidecar.id), fp.image)
            # A clone of a frozen image: e2fsck -p only when its superblock asks for it.
            steps.image_mount(fp, check=not snapshots_store.clean(fp.image))
        except BaseException:
            _machine_remove(fp)
            fork.delete()
            raise
        fork.status, fork.mounted_at, fork.error = Mount.Status.MOUNTED, timezone.now(), ""
        fork.save()
    logger.info("fork %s of %s mounted from snapshot %s", name, bucket, snapshot_id)
    return fork


def _machine_remove(fp: system.Paths) -> None:
    """Unmount the fork's ext4, free its loop device, delete its image (JuiceFS's trash keeps
    the blocks only it held for TRASH_DAYS)."""
    steps.image_release(fp)
    shutil.rmtree(fp.volume_dir, ignore_errors=True)


def fork_remove(*, fork: Mount, force: bool) -> None:
    """Unmount and delete a fork (services.mount_remove delegates here): its preview and
    commands stop first (unless not forced and a preview runs: 409, as for any unmount)."""
    for guard in list(guards.registered):
        guard(fork.bucket, force)
    _machine_remove(_paths(fork))
    fork.delete()
    logger.info("fork %s of %s removed", fork.bucket, fork.parent)


def fork_promote(*, name: str) -> dict[str, Any]:
    """Make a fork its parent bucket's workspace: both are unmounted (their previews and
    commands stopped and reported; 409 run_active while a run is on the parent), the fork's image
    is renamed over the parent's (one JuiceFS rename; the old image goes to the trash) and the
    parent is mounted again with it. The fork is gone afterwards; the snapshots stay."""
    name = validate_bucket_name(name)
    fork = Mount.objects.filter(bucket=name).exclude(parent="").first()
    if fork is None:
        raise ForkNotFound(f"{name!r} is not a mounted fork.")
    parent, p = snapshots._mounted_image(fork.parent)
    fp = _paths(fork)
    with ExitStack() as stack:
        snapshots._runs_held(parent.bucket, stack)
        stack.enter_context(snapshots._lock(p))
        report, forked = snapshots._users_report(parent.bucket), snapshots._users_report(name)
        # Both workspaces' previews and commands stop; not parent_guard, which would remove
        # this very fork with the parent's other forks (those stay mounted).
        for guard in [guard for guard in guards.registered if guard is not parent_guard]:
            guard(parent.bucket, True)
            guard(name, True)
        steps.image_release(fp)
        steps.image_release(p)
        try:
            fp.image.rename(p.image)
        finally:
            steps.image_mount(p)
        shutil.rmtree(fp.volume_dir, ignore_errors=True)
        fork.delete()
    logger.info("fork %s promoted to be the workspace of %s", name, parent.bucket)
    return {"bucket": parent.bucket, "promoted": name,
            "previews_stopped": report["previews_stopped"] + forked["previews_stopped"],
            "commands_stopped": report["commands_stopped"] + forked["commands_stopped"]}


def fork_sync(*, fork: Mount) -> Mount:
    """A fork's writes are its parent volume's: flush the fork's ext4, then sync the parent."""
    steps.filesystem_sync(_paths(fork).mount_point)
    parent = services.mount_sync(bucket=fork.parent)
    fork.synced_at = parent.synced_at
    fork.save(update_fields=["synced_at"])
    return fork


def parent_guard(bucket: str, force: bool) -> None:
    """Before a bucket is unmounted: its forks (whose images live in its volume) go first —
    409 forks_mounted unless forced."""
    forks = list(Mount.objects.filter(parent=bucket))
    if forks and not force:
        names = ", ".join(fork.bucket for fork in forks)
        raise MountBusy(f"Bucket {bucket!r} has mounted forks ({names}); unmount them first, "
                        "or unmount with force.")
    for fork in forks:
        fork_remove(fork=fork, force=True)


def forks_reconcile() -> dict[str, str]:
    """At start-up: a fork whose ext4 is no longer mounted (a reboot) is dropped — its row, its
    slot and its image; one still mounted stays."""
    outcome = {}
    for fork in Mount.objects.exclude(parent=""):
        if fork.status == Mount.Status.MOUNTED and steps.image_mounted(_paths(fork)):
            outcome[fork.bucket] = "ok"
            continue
        _machine_remove(_paths(fork))
        fork.delete()
        outcome[fork.bucket] = "dropped"
    return outcome


def owning_bucket(name: str) -> str:
    """The bucket a workspace name belongs to for the tenant rule: a fork's parent, else itself."""
    parent = Mount.objects.filter(bucket=name).exclude(parent="").values_list(
        "parent", flat=True).first()
    return parent or name


def register() -> None:
    from weldr_agent import access

    guards.register_unmount_guard(parent_guard)
    if parent_guard not in snapshots.restore_spares:
        snapshots.restore_spares.append(parent_guard)
    services.forks.sync, services.forks.remove = fork_sync, fork_remove
    services.forks.reconcile = forks_reconcile
    access.owning_bucket_register(owning_bucket)
