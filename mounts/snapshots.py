"""The verbs of snapshots: take, list, delete, restore, retention (docs/snapshots.md).

A snapshot is a `juicefs clone` of the workspace's ext4 image, taken while the ext4 is frozen,
kept with a JSON sidecar in the volume's root-only `.weldr/snapshots/`: in the bucket, listed
and restored from there by any machine that mounts it. Every verb holds the bucket's lock, so
it never interleaves with a mount, unmount or sync of the same bucket.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from mounts import guards, services, snapshots_store, steps, system
from mounts.errors import NotMounted, SyncFailed
from mounts.models import Mount, Snapshot
from mounts.snapshots_errors import (
    InvalidSnapshotName,
    RestoreFailed,
    SnapshotNotFound,
    SnapshotsUnavailable,
)
from mounts.snapshots_store import Sidecar
from mounts.validators import validate_bucket_name
from weldr_agent.databases import STATE_DB

logger = logging.getLogger("weldr.snapshots")
POLICY_NAME = "policy.json"


@dataclass(frozen=True)
class Policy:
    keep: int
    max_age_days: int


# ---------------------------------------------------------------------------------------------
# What snapshots need of the floors above, registered in their AppConfig.ready(): mounts import
# none of them (docs/architecture.md)
# ---------------------------------------------------------------------------------------------

# reporter(bucket) -> {"previews_stopped": [...]} or {"commands_stopped": [...]}: what runs there
Reporter = Callable[[str], dict[str, list[dict[str, Any]]]]
# hold(bucket) -> a context manager held for the whole restore (refusing with a 409 if it must)
Hold = Callable[[str], AbstractContextManager[Any]]
# listener(bucket, type, data, branch_id or None): "snapshot.created" / "snapshot.restored"
Listener = Callable[[str, str, dict[str, Any], "str | None"], None]
_reporters: list[Reporter] = []
_holds: list[Hold] = []
_listeners: list[Listener] = []


def users_report_register(reporter: Reporter) -> None:
    if reporter not in _reporters:
        _reporters.append(reporter)


def restore_hold_register(hold: Hold) -> None:
    if hold not in _holds:
        _holds.append(hold)


def listener_register(listener: Listener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def _mounted_image(bucket: str) -> tuple[Mount, system.Paths]:
    """The bucket's live image mount; 404 not mounted, 409 for the files layout."""
    mount = services.mount_get(bucket=bucket)
    if mount.status != Mount.Status.MOUNTED:
        raise NotMounted(f"Bucket {bucket!r} is {mount.status}, not mounted.")
    if mount.parent:
        raise SnapshotsUnavailable(f"{bucket!r} is a fork of {mount.parent!r}: forks have no "
                                   "snapshots of their own (yet).")
    if mount.layout != system.IMAGE:
        raise SnapshotsUnavailable(
            f"Bucket {bucket!r} has the files layout: its workspace is the JuiceFS volume "
            "itself, so a snapshot area there would be the sandbox's to read and forge, and a "
            "directory clone cannot be frozen. Snapshots need the image layout.")
    return mount, system.paths(bucket, mount.layout)


def _lock(p: system.Paths) -> Any:
    return steps.bucket_lock(p, timeout=float(settings.MOUNT_TIMEOUT_SECONDS * 2))


def _name_check(name: str) -> str:
    if name and not system.snapshot_name_valid(name):
        raise InvalidSnapshotName()
    return name


def _sidecar_get(p: system.Paths, snapshot_id: str) -> Sidecar:
    sidecar = snapshots_store.sidecar_read(p, snapshot_id)
    if sidecar is None:
        raise SnapshotNotFound(f"No snapshot {snapshot_id[:40]!r} in bucket {p.bucket!r}.")
    return sidecar


# ---------------------------------------------------------------------------------------------
# Take, list, delete
# ---------------------------------------------------------------------------------------------


def snapshot_create(*, bucket: str, name: str = "", note: str = "",
                    kind: str = Snapshot.Kind.MANUAL, run_id: str = "") -> Snapshot:
    """Freeze the workspace, clone its image, thaw; record the sidecar; apply retention."""
    bucket = validate_bucket_name(bucket)
    name = _name_check(name)
    _mount, p = _mounted_image(bucket)
    with _lock(p):
        _mounted_image(bucket)  # still mounted now that the lock is ours
        if not steps.image_mounted(p):
            raise SyncFailed(f"The workspace image of {bucket} is not mounted "
                                      "read-write; no consistent snapshot can be taken.")
        snapshots_store.orphans_remove(p)
        snapshot_id = uuid.uuid4().hex
        frozen_ms = snapshots_store.take(p, system.snapshot_image(p, snapshot_id))
        sidecar = Sidecar(id=snapshot_id, bucket=bucket, name=name, note=note, kind=kind,
                          created_at=datetime.now(UTC).isoformat(), run_id=run_id,
                          frozen_ms=round(frozen_ms, 1))
        try:
            snapshots_store.sidecar_write(p, sidecar)
        except OSError:
            snapshots_store.remove(p, snapshot_id)
            raise
        rows, _deleted = _retention_and_rows(p, keep_id=snapshot_id)
    logger.info("snapshot %s of %s taken (frozen %.0f ms)", snapshot_id, bucket, frozen_ms)
    return next(row for row in rows if row.snapshot_id == snapshot_id)


def snapshot_list(*, bucket: str, sizes: bool = False) -> list[Snapshot]:
    """The bucket's snapshots as its volume lists them (the rows are refreshed from it); with
    `sizes`, each one's data it alone holds is measured (one `juicefs info` of every image)."""
    bucket = validate_bucket_name(bucket)
    _mount, p = _mounted_image(bucket)
    with _lock(p):
        return _rows_refresh(p, snapshots_store.sidecars(p), sizes=sizes)


def snapshot_delete(*, bucket: str, snapshot_id: str) -> None:
    bucket = validate_bucket_name(bucket)
    _mount, p = _mounted_image(bucket)
    with _lock(p):
        _sidecar_get(p, snapshot_id)
        snapshots_store.remove(p, snapshot_id)
        Snapshot.objects.filter(bucket=bucket, snapshot_id=snapshot_id).delete()


def _rows_refresh(p: system.Paths, found: list[Sidecar], *, sizes: bool) -> list[Snapshot]:
    """Make the bucket's rows what the volume's sidecars (`found`, oldest first) say; the rows,
    in that order. Only rows that differ are written: a snapshot's sidecar never changes, so
    taking one writes one row, not one per snapshot of the bucket."""
    measured = snapshots_store.sizes(p, [item.id for item in found]) if sizes else {}
    with transaction.atomic(using=STATE_DB):
        existing = {row.snapshot_id: row for row in Snapshot.objects.filter(bucket=p.bucket)}
        listed = {item.id for item in found}
        if gone := [snapshot_id for snapshot_id in existing if snapshot_id not in listed]:
            Snapshot.objects.filter(bucket=p.bucket, snapshot_id__in=gone).delete()
        rows = []
        for item in found:
            values: dict[str, Any] = {
                "name": item.name, "note": item.note, "kind": item.kind, "run_id": item.run_id,
                "created_at": datetime.fromisoformat(item.created_at),
                "frozen_ms": item.frozen_ms}
            if item.id in measured:
                values["size_bytes"] = measured[item.id]
            row = existing.get(item.id)
            if row is None:
                row = Snapshot.objects.create(bucket=p.bucket, snapshot_id=item.id, **values)
            elif any(getattr(row, name) != value for name, value in values.items()):
                for name, value in values.items():
                    setattr(row, name, value)
                row.save(update_fields=list(values))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------------------------


def _users_report(bucket: str) -> dict[str, Any]:
    """What runs in the workspace and will be stopped: its preview and its commands, as the
    apps that run them report it."""
    report: dict[str, Any] = {"previews_stopped": [], "commands_stopped": []}
    for reporter in _reporters:
        for key, items in reporter(bucket).items():
            report.setdefault(key, []).extend(items)
    return report


def _runs_held(bucket: str, stack: ExitStack) -> None:
    """Hold off whatever must not see the workspace swapped under it (workflow runs: 409
    run_active while one is active), as the apps that start them registered."""
    for hold in _holds:
        stack.enter_context(hold(bucket))


# Unmount guards a restore does not run: the forks' (registered by mounts.snapshots_forks).
# A restore swaps the bucket's own image only; each fork has its own image in the volume,
# whose JuiceFS stays mounted, so the forks stay mounted too.
restore_spares: list[Callable[[str, bool], None]] = []


def _users_stop(bucket: str) -> dict[str, Any]:
    report = _users_report(bucket)
    # The unmount guards, forced: the preview is stopped, the commands killed and the exec
    # sandbox removed, so nothing holds the ext4 that is about to be unmounted.
    for guard in [guard for guard in guards.registered if guard not in restore_spares]:
        guard(bucket, True)
    return report


def snapshot_restore(*, bucket: str, snapshot_id: str) -> dict[str, Any]:
    """Put the workspace back to a snapshot; the snapshot stays. The report says what was
    stopped first."""
    bucket = validate_bucket_name(bucket)
    _mount, p = _mounted_image(bucket)
    with ExitStack() as stack:
        _runs_held(bucket, stack)
        stack.enter_context(_lock(p))
        _mounted_image(bucket)
        sidecar = _sidecar_get(p, snapshot_id)
        report = _users_stop(bucket)
        image_swap(p, system.snapshot_image(p, sidecar.id))
    logger.info("workspace of %s restored to snapshot %s", bucket, snapshot_id)
    result = {"bucket": bucket, "snapshot_id": snapshot_id, **report}
    snapshot_restored_publish(result)
    return result


def image_swap(p: system.Paths, source: Path) -> None:
    """Unmount the workspace's ext4, replace its image by a clone of `source`, mount it again.

    The clone goes to a temporary name and is renamed over the image in one JuiceFS rename:
    a crash leaves either image whole. The workspace is mounted again whatever failed — the
    old image when the clone did not happen.
    """
    draft = p.image.with_name(f"{p.image.name}.restoring")
    draft.unlink(missing_ok=True)
    steps.image_release(p)
    # Else the mount below would find the old image's loop device still bound and detach it
    # as stale.
    steps.loop_release_wait(p.image, timeout=10, interval=0.01)
    try:
        snapshots_store.clone(p.volume_dir, source, draft)
        draft.rename(p.image)
    except Exception as error:
        draft.unlink(missing_ok=True)
        steps.image_mount(p)
        raise RestoreFailed(f"Restoring {p.bucket} failed; the workspace is as it was: "
                            f"{error}") from error
    # A clone of a frozen image: no journal to replay, nothing for e2fsck -p to do (it runs
    # when the superblock says otherwise).
    steps.image_mount(p, check=not snapshots_store.clean(p.image))


# ---------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------


def _policy_path(p: system.Paths) -> Path:
    return system.snapshot_dir(p) / POLICY_NAME


def policy_read(p: system.Paths) -> Policy:
    """The bucket's policy from its volume (so it follows the bucket), else the settings'."""
    try:
        data = json.loads(_policy_path(p).read_text())
        return Policy(keep=int(data["keep"]), max_age_days=int(data["max_age_days"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Policy(keep=settings.SNAPSHOT_KEEP, max_age_days=settings.SNAPSHOT_MAX_AGE_DAYS)


def policy_get(*, bucket: str) -> Policy:
    bucket = validate_bucket_name(bucket)
    _mount, p = _mounted_image(bucket)
    return policy_read(p)


def policy_set(*, bucket: str, keep: int, max_age_days: int) -> tuple[Policy, list[str]]:
    """Record the bucket's policy in its volume and apply it now; (policy, deleted ids)."""
    bucket = validate_bucket_name(bucket)
    _mount, p = _mounted_image(bucket)
    with _lock(p):
        folder = system.snapshot_dir(p)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = folder / f"{POLICY_NAME}.new"
        draft.write_text(json.dumps({"keep": keep, "max_age_days": max_age_days}))
        draft.rename(_policy_path(p))
        _rows, deleted = _retention_and_rows(p)
    return Policy(keep=keep, max_age_days=max_age_days), deleted


def retention_victims(items: list[Sidecar], policy: Policy, now: datetime,
                      keep_id: str = "") -> list[str]:
    """Ids to delete, oldest first: beyond the newest `keep`, or older than `max_age_days`.
    The newest snapshot (and `keep_id`, the one just taken) always stays."""
    ordered = sorted(items, key=lambda item: (item.created_at, item.id))
    spared = {ordered[-1].id} if ordered else set()
    spared.add(keep_id)
    victims = []
    if policy.keep:
        victims += [item.id for item in ordered[:-policy.keep]]
    if policy.max_age_days:
        limit = now - timedelta(days=policy.max_age_days)
        victims += [item.id for item in ordered
                    if datetime.fromisoformat(item.created_at) < limit]
    return [item.id for item in ordered if item.id in set(victims) - spared]


def _retention_and_rows(p: system.Paths, keep_id: str = "") -> tuple[list[Snapshot], list[str]]:
    """Delete the snapshots the policy lets go, then make the rows what is left (the sidecars
    are read once for both): the rows, and the ids deleted."""
    found = snapshots_store.sidecars(p)
    victims = retention_victims(found, policy_read(p), datetime.now(UTC), keep_id)
    for snapshot_id in victims:
        logger.info("retention: deleting snapshot %s of %s", snapshot_id, p.bucket)
        snapshots_store.remove(p, snapshot_id)
    rows = _rows_refresh(p, [item for item in found if item.id not in victims], sizes=False)
    return rows, victims


# ---------------------------------------------------------------------------------------------
# Checkpoints around workflow runs, and events
# ---------------------------------------------------------------------------------------------


def _publish(bucket: str, type: str, data: dict[str, Any], branch_id: str | None = None) -> None:
    """Tell the listeners (the branches' event streams); an event that cannot be recorded never
    undoes the snapshot or the restore it reports."""
    for listener in _listeners:
        try:
            listener(bucket, type, data, branch_id)
        except Exception:
            logger.exception("%s of %s not published", type, bucket)


def snapshot_created_publish(row: Snapshot, branch_id: str | None = None) -> None:
    _publish(row.bucket, "snapshot.created",
             {"bucket": row.bucket, "snapshot_id": row.snapshot_id, "name": row.name,
              "kind": row.kind, "run_id": row.run_id}, branch_id)


def snapshot_restored_publish(report: dict[str, Any]) -> None:
    _publish(report["bucket"], "snapshot.restored", report)


def checkpoint_before_run(*, bucket: str, run_id: str, branch_id: str) -> Snapshot | None:
    """The snapshot a workflow run starts with (SNAPSHOT_BEFORE_RUN), so that `POST /revert
    {"mode": "snapshot"}` can bring back the whole workspace as it was, untracked and ignored
    files included. None when it is off or the workspace cannot have one (the files layout);
    a failure is logged and the run goes on: a checkpoint must not cost the user their run."""
    if not settings.SNAPSHOT_BEFORE_RUN:
        return None
    try:
        row = snapshot_create(bucket=bucket, name="before run", kind=Snapshot.Kind.CHECKPOINT,
                              run_id=run_id)
    except SnapshotsUnavailable:
        return None
    except Exception:
        logger.exception("checkpoint of %s before run %s failed; the run goes on", bucket,
                         run_id)
        return None
    snapshot_created_publish(row, branch_id)
    return row


def run_checkpoint(*, bucket: str, run_id: str) -> str:
    """The id of the checkpoint taken before run `run_id` on this bucket's workspace."""
    _mount, p = _mounted_image(bucket)
    checkpoint = next((item for item in reversed(snapshots_store.sidecars(p))
                       if item.kind == Snapshot.Kind.CHECKPOINT and run_id
                       and item.run_id == run_id), None)
    if checkpoint is None:
        raise SnapshotNotFound("No checkpoint of the run that made this version "
                               "(SNAPSHOT_BEFORE_RUN off then, deleted by retention, or not "
                               "made by a run).")
    return checkpoint.id
