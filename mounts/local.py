"""Local mode: a bucket's workspace is a branch directory on the local disk, synced to S3.

With WORKSPACE_MODE=local, `mounts.services` hands the machine work to this module through
the LocalMachine strategy (mounts/machine.py): "mounted" means "restored from S3, present and
pinned". The scripts in scripts/ do the work (create, restore, back up, LRU clean-up); this
module runs them, pins directories in use and backs up changed ones on a timer. Layout, sync
protocol and the in-use lock: docs/local-mode.md.

A branch directory is a sandbox's workspace: its markers (in use, synced, restoring, ...) live
beside it in `state_dir(bucket)`, root-only, never inside it, and nothing here follows a link
in it (`dirty` walks it by file descriptors without following symlinks).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from django.conf import settings

from mounts.errors import MountFailed, NotMounted, StorageUnavailable
from weldr_agent import lifecycle, runner

logger = logging.getLogger("weldr.mounts.local")

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
# Shuts down after previews, exec and workflows (higher orders), before mounts (10).
ORDER = 20
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# bucket -> the open state_dir/inuse holding a shared flock: cleanup-lru.sh never removes it.
_pins: dict[str, IO[str]] = {}
_pins_lock = threading.Lock()
# One sync per bucket at a time within this process (the scripts also flock across processes).
_sync_locks: dict[str, threading.Lock] = {}
_timer_stop = threading.Event()
_timer: threading.Thread | None = None


def enabled() -> bool:
    return settings.WORKSPACE_MODE == "local"


def project_key() -> str:
    """The branch directories' project component: this machine's PROJECT_ID, else "local"."""
    return settings.PROJECT_ID if _PROJECT.match(settings.PROJECT_ID or "") else "local"


def branch_dir(bucket: str) -> Path:
    """BRANCHES_DIR/<project>/<bucket>: the bucket is the branch's id on this machine."""
    return settings.BRANCHES_DIR / project_key() / bucket


# The markers' directory of every branch directory (scripts/branch-common.sh: STATE_ROOT): a
# dot name, which no project id has, so it is never a project's directory.
STATE_ROOT = ".meta"
INUSE = "inuse"
SYNCED = "synced"
RESTORING = "restoring"


def state_dir(bucket: str) -> Path:
    """BRANCHES_DIR/.meta/<project>/<bucket>: the branch directory's markers, root-only (0700),
    never in a sandbox: the workspace itself can hold any name, link or file."""
    return settings.BRANCHES_DIR / STATE_ROOT / project_key() / bucket


# ---------------------------------------------------------------------------------------------
# Pure builders: argv and environment of the scripts
# ---------------------------------------------------------------------------------------------


def script_argv(script: str, bucket: str, *options: str) -> list[str]:
    return [str(SCRIPTS / script), *options, "--bucket", bucket, bucket, project_key()]


def script_env() -> dict[str, str]:
    """Explicit keys and paths only; nothing else of the agent's environment."""
    return runner.clean_env({
        "WELDR_ENV_VOL": str(settings.WELDR_ENV_VOL),
        "WELDR_BRANCHES_DIR": str(settings.BRANCHES_DIR),
        "WELDR_BRANCH_MIN_FREE_MB": str(settings.BRANCH_MIN_FREE_MB),
        "WELDR_RCLONE": runner.tool("rclone"),
        "S3_ENDPOINT": settings.S3_ENDPOINT,
        "S3_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
        "S3_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
        "S3_REGION": settings.S3_REGION,
    })


def _run(script: str, bucket: str, *options: str) -> str:
    try:
        return runner.run(script_argv(script, bucket, *options), env=script_env(),
                          timeout=settings.BRANCH_SYNC_TIMEOUT_SECONDS).stdout
    except runner.CommandError as error:
        unreachable = "cannot read" in str(error) or "failed; S3 still holds" in str(error)
        raise (StorageUnavailable if unreachable else MountFailed)(
            f"{script} for {bucket}: {error.stderr_tail or error}") from error


# ---------------------------------------------------------------------------------------------
# In use: a shared flock on state_dir/inuse for as long as the workspace is mounted
# ---------------------------------------------------------------------------------------------


def _pin(bucket: str, state: Path) -> None:
    with _pins_lock:
        if bucket in _pins:
            return
        handle = open(state / INUSE, "a")  # noqa: SIM115 (held until unpinned)
        fcntl.flock(handle, fcntl.LOCK_SH)
        # cleanup-lru.sh may have removed the directory (and its markers) before we got the lock.
        if os.fstat(handle.fileno()).st_ino != (state / INUSE).stat().st_ino:
            handle.close()
            raise MountFailed(f"The branch directory of {bucket} was removed while opening it.")
        _pins[bucket] = handle


def _unpin(bucket: str) -> None:
    with _pins_lock:
        handle = _pins.pop(bucket, None)
    if handle is not None:
        handle.close()


def pinned() -> list[str]:
    with _pins_lock:
        return sorted(_pins)


# ---------------------------------------------------------------------------------------------
# The verbs LocalMachine (mounts/machine.py) calls
# ---------------------------------------------------------------------------------------------


def branch_open(bucket: str) -> bool:
    """Create (restoring from S3 when absent) and pin the branch directory; True if restored."""
    path, state = branch_dir(bucket), state_dir(bucket)
    fresh = not path.is_dir() or (state / RESTORING).exists()
    _run("create-branch-dir.sh", bucket, "--restore")
    for attempt in range(3):
        try:
            _pin(bucket, state)
            break
        except (MountFailed, FileNotFoundError):
            if attempt == 2:
                raise
            _run("create-branch-dir.sh", bucket, "--restore")
    return fresh


def branch_healthy(bucket: str) -> bool:
    path = branch_dir(bucket)
    return bucket in pinned() and path.is_dir() and not (state_dir(bucket) / RESTORING).exists()


def branch_close(bucket: str) -> None:
    """Back the directory up (when changed) and unpin it; it stays on disk for reuse."""
    try:
        workspace_sync(bucket)
    finally:
        _unpin(bucket)


def workspace_path(bucket: str) -> Path:
    if not branch_healthy(bucket):
        raise NotMounted(f"Bucket {bucket!r} is not mounted; mount it first (POST /mounts).")
    return branch_dir(bucket)


def dirty(path: Path, state: Path) -> bool:
    """True when anything under `path` changed (ctime) after the last complete sync (the mtime
    of `state`/synced).

    The walk holds each directory open and lstat()s names relative to it (os.fwalk without
    following symlinks): a directory swapped for a link mid-walk is never entered.
    """
    try:
        synced = (state / SYNCED).stat().st_mtime_ns
    except FileNotFoundError:
        return True
    if path.stat().st_ctime_ns > synced:
        return True
    for _root, dirs, files, fd in os.fwalk(path, follow_symlinks=False):
        for name in dirs + files:
            try:
                if os.stat(name, dir_fd=fd, follow_symlinks=False).st_ctime_ns > synced:
                    return True
            except FileNotFoundError:
                return True
    return False


def workspace_sync(bucket: str) -> bool:
    """Back a branch directory up to S3 now when it changed; True when a sync ran.

    The workflow engine calls this after every version (through mounts.services.mount_sync,
    which calls it through LocalMachine.sync); the timer and shutdown call it too.
    """
    path, state = branch_dir(bucket), state_dir(bucket)
    if not path.is_dir() or (state / RESTORING).exists():
        return False
    lock = _sync_locks.setdefault(bucket, threading.Lock())
    with lock:
        if not dirty(path, state):
            return False
        started = time.monotonic()
        out = _run("sync-to-s3.sh", bucket)
        logger.info("synced %s to S3 in %.1fs: %s", bucket, time.monotonic() - started,
                    out.strip())
        return True


def sync_all(*, deadline: float | None = None) -> dict[str, str]:
    """Back up every pinned branch directory that changed, in parallel."""
    buckets = pinned()
    outcome: dict[str, str] = {}
    if not buckets:
        return outcome

    def one(bucket: str) -> None:
        try:
            outcome[bucket] = "synced" if workspace_sync(bucket) else "clean"
        except Exception as error:  # the next tick (or the unmount) tries again
            outcome[bucket] = f"failed: {error}"
            logger.warning("sync of %s failed: %s", bucket, error)

    with ThreadPoolExecutor(max_workers=min(len(buckets), 4)) as pool:
        for future in [pool.submit(one, bucket) for bucket in buckets]:
            future.result(timeout=None if deadline is None
                          else max(deadline - time.monotonic(), 1))
    return outcome


# ---------------------------------------------------------------------------------------------
# Lifecycle: the timer at start-up, a final backup at shutdown
# ---------------------------------------------------------------------------------------------


def _timer_loop() -> None:
    while not _timer_stop.wait(settings.BRANCH_SYNC_INTERVAL_SECONDS):
        try:
            sync_all()
        except Exception:
            logger.exception("periodic branch sync failed")


def startup() -> None:
    global _timer
    if not enabled():
        return
    _timer_stop.clear()
    _timer = threading.Thread(target=_timer_loop, name="branch-sync", daemon=True)
    _timer.start()


def shutdown(deadline: float) -> None:
    if not enabled():
        return
    _timer_stop.set()
    outcome = sync_all(deadline=deadline)
    logger.info("final branch sync: %s", outcome or "nothing mounted")


def register() -> None:
    lifecycle.register("local-sync", order=ORDER, startup=startup, shutdown=shutdown)
