"""Processes: a mount's daemons (JuiceFS, Litestream): started, found by their tag, stopped."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

from django.conf import settings

from mounts import system
from mounts.errors import MountFailed, SyncFailed
from mounts.steps.mountpoints import answers, fuse_connection, umount
from weldr_agent import runner

logger = logging.getLogger("weldr.mounts")

# Popen objects of the daemons this process started, so that their exit is reaped (a zombie
# would look alive to a pid check). Daemons started by another process are tracked by pid.
_children: dict[int, runner.Popen[bytes]] = {}
LOG_TAIL = 1500
# How often a starting daemon is looked at: a remount waits for two of them (a poll of 0.1 s
# cost 50 ms on average of a 0.5 s remount).
READY_POLL = 0.02


def _tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read().split(b"\0")
    except OSError:
        return None
    prefix = f"{system.TAG_VARIABLE}=".encode()
    for item in environ:
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "replace")
    return None


def owns(pid: int | None, tag: str) -> bool:
    """True when `pid` is alive and is the daemon tagged `tag` (system.daemon_tag).

    The check guards against signalling a recycled pid that now belongs to someone else.
    """
    if not pid:
        return False
    _reap(pid)
    return runner.pid_alive(pid) and _tag(pid) == tag


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)


def daemons(p: system.Paths, kind: str | None = None) -> list[int]:
    """Pids of this bucket's daemons (of one kind), found by their tag: works after a crash
    lost their pids, and finds a JuiceFS server its watchdog restarted."""
    kinds = [kind] if kind else [system.JUICEFS, system.LITESTREAM]
    tags = {system.daemon_tag(p, k) for k in kinds}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() \
                and _tag(int(entry.name)) in tags and runner.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def pid_stop(pid: int | None, tag: str, *, grace: float, sig: int = signal.SIGTERM) -> None:
    """Stop one of our daemons: `sig` to its process group, then SIGKILL after `grace`."""
    if not owns(pid, tag):
        return
    assert pid is not None
    runner.kill_group(pid, sig)
    if not runner.wait_until(lambda: not owns(pid, tag), timeout=grace, interval=0.1):
        logger.warning("pid %s did not stop within %ss; killing it", pid, grace)
        runner.kill_group(pid, signal.SIGKILL)
        runner.wait_until(lambda: not owns(pid, tag), timeout=10, interval=0.1)


def litestream_start(p: system.Paths) -> int:
    return litestream_ready(p, litestream_spawn(p))


def litestream_spawn(p: system.Paths) -> runner.Popen[bytes]:
    """Start Litestream on the bucket's database; litestream_ready waits for it.

    Split in two so that a mount starts JuiceFS while Litestream gets ready (each takes
    tens to hundreds of milliseconds, mostly waiting: docs/mounts.md, "Remount").
    """
    p.litestream_socket.parent.mkdir(parents=True, exist_ok=True)
    p.litestream_socket.unlink(missing_ok=True)
    env = system.litestream_env()
    env[system.TAG_VARIABLE] = system.daemon_tag(p, system.LITESTREAM)
    process = runner.spawn(system.litestream_replicate_argv(runner.tool("litestream"), p),
                           log_path=p.litestream_log, env=env)
    _children[process.pid] = process
    return process


def litestream_ready(p: system.Paths, process: runner.Popen[bytes]) -> int:
    """Its pid once its control socket listens (it then has opened the database); else
    MountFailed with its log's tail, the process stopped."""
    ready = runner.wait_until(
        lambda: p.litestream_socket.exists() or process.poll() is not None,
        timeout=settings.MOUNT_TIMEOUT_SECONDS, interval=READY_POLL,
    )
    if not ready or process.poll() is not None:
        runner.stop(process, grace=5)
        tail = runner.log_tail(p.litestream_log, LOG_TAIL)
        raise MountFailed(f"Litestream did not start for {p.bucket}: {tail}")
    return process.pid


def litestream_sync(p: system.Paths, pid: int | None, *, timeout: int = 60) -> int:
    """Force a sync and wait until the replica holds the local database's last transaction.

    `sync -wait` answers with the local TXID at the time of its answer: a write that landed
    meanwhile (JuiceFS's, or Litestream's own bookkeeping after a `start`) leaves the replica
    one behind it. Synced again, the replica reaching that first TXID is enough: every write
    before the first call is in it.
    """
    if not owns(pid, system.daemon_tag(p, system.LITESTREAM)):
        raise SyncFailed(f"Litestream is not running for {p.bucket}; see {p.litestream_log}.")
    target: int | None = None
    for _ in range(3):
        try:
            result = runner.run(system.litestream_sync_argv(runner.tool("litestream"), p,
                                                            timeout=timeout),
                                env=system.litestream_env(), timeout=timeout + 10)
            status = json.loads(result.stdout)
        except (runner.CommandError, ValueError) as error:
            raise SyncFailed(f"Litestream could not sync {p.bucket}'s metadata: "
                             f"{error}") from error
        txid, replica = system.sync_txid(status.get("txid")), \
            system.sync_txid(status.get("replica_txid"))
        target = txid if target is None else target
        if replica >= target:
            return replica
    raise SyncFailed(f"Litestream's replica of {p.bucket} is behind ({status}).")


def juicefs_start(p: system.Paths, budget: system.Budget) -> int:
    return juicefs_ready(p, juicefs_spawn(p, budget))


def juicefs_spawn(p: system.Paths, budget: system.Budget) -> runner.Popen[bytes]:
    """Start `juicefs mount` in the foreground (we own its pid and log); juicefs_ready waits."""
    p.volume_point.mkdir(parents=True, exist_ok=True)
    p.cache_dir.mkdir(parents=True, exist_ok=True)
    stats = os.statvfs(p.cache_dir)
    ratio = system.free_space_ratio(stats.f_blocks * stats.f_frsize)
    argv = system.juicefs_mount_argv(runner.tool("juicefs"), p, budget, free_ratio=ratio)
    env = system.juicefs_env(budget.buffer_size_mb)
    env[system.TAG_VARIABLE] = system.daemon_tag(p, system.JUICEFS)
    process = runner.spawn(argv, log_path=p.juicefs_log, env=env)
    _children[process.pid] = process
    memory_confine(p, [process.pid])
    return process


def juicefs_ready(p: system.Paths, process: runner.Popen[bytes]) -> int:
    """Its pid once the mount answers (its OOM score set back); else MountFailed with its
    log's tail, the process stopped and the mount point detached."""
    ready = runner.wait_until(lambda: answers(p.volume_point) or process.poll() is not None,
                              timeout=settings.MOUNT_TIMEOUT_SECONDS, interval=READY_POLL)
    if not ready or process.poll() is not None:
        runner.stop(process, grace=5)
        umount(p.volume_point, lazy=True)
        tail = runner.log_tail(p.juicefs_log, LOG_TAIL)
        raise MountFailed(f"JuiceFS did not mount {p.bucket}: {tail}")
    pids = daemons(p, system.JUICEFS)
    oom_score_adjust(pids)
    memory_confine(p, pids)  # a server its watchdog forked before the first move
    return process.pid


# cgroup v1's memory controller, where the sandboxes' memory cgroups are too (docs/sandbox.md).
MEMORY_HIERARCHY = Path("/sys/fs/cgroup/memory")


def memory_group(p: system.Paths) -> Path:
    """The memory cgroup of a mount's JuiceFS (settings.JUICEFS_MEMORY_CGROUP_MB)."""
    return MEMORY_HIERARCHY / f"weldr-{settings.INSTANCE_ID}-mount-{p.bucket}"


def memory_confine(p: system.Paths, pids: list[int]) -> None:
    """Move JuiceFS processes into their mount's memory cgroup, made and limited first.

    The limit bounds JuiceFS's heap and the page cache it fills (its staging and cache blocks);
    within it the kernel reclaims JuiceFS's own clean cache pages and reuses them, where
    unconfined each new block takes fresh pages from the machine (docs/snapshots.md, "Fresh
    memory"). A process moved keeps what it was charged before; a server its watchdog restarts
    is born in the group. Without the hierarchy (cgroup v2 only) or when the kernel refuses,
    JuiceFS runs unconfined, as before, and the agent says so once.
    """
    if not settings.JUICEFS_MEMORY_CGROUP_MB:
        return
    if not MEMORY_HIERARCHY.is_dir():
        _unconfined(f"no cgroup v1 memory hierarchy at {MEMORY_HIERARCHY}")
        return
    group = memory_group(p)
    try:
        group.mkdir(exist_ok=True)
        (group / "memory.limit_in_bytes").write_text(
            str(settings.JUICEFS_MEMORY_CGROUP_MB * 1024 * 1024))
        for pid in pids:
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:  # gone meanwhile: reconcile deals with dead daemons
                pass
    except OSError as error:
        _unconfined(f"{group}: {error.strerror or error}")


def memory_release(p: system.Paths, *, timeout: float = 5) -> None:
    """Remove the mount's memory cgroup once its JuiceFS is gone (`rmdir` only: a group still
    holding a process stays, and the next mount of the bucket takes it again). A killed JuiceFS
    leaves its group a moment after its pid stops looking alive (a FUSE server's exit cleans up
    its connection first): the removal is retried for up to `timeout` seconds."""
    group = memory_group(p)
    refused = runner.cgroup_rmdir(group, timeout=timeout)
    if refused is not None:
        logger.warning("memory cgroup %s kept: %s", group, refused.strerror)


_unconfined_said = False


def _unconfined(reason: str) -> None:
    global _unconfined_said
    if not _unconfined_said:
        _unconfined_said = True
        logger.warning("JuiceFS runs without its memory cgroup (JUICEFS_MEMORY_CGROUP_MB=%s): "
                       "%s; said once", settings.JUICEFS_MEMORY_CGROUP_MB, reason)


def oom_score_adjust(pids: list[int]) -> None:
    """Undo JuiceFS's own oom_score_adj of -1000 (storage hazard 7, docs/mounts.md) for its
    watchdog and server.

    A server its watchdog restarts sets -1000 again; the next mount or reconcile of the bucket
    sets it back. Lowering a score needs CAP_SYS_RESOURCE: without it (a container that drops
    it) JuiceFS could not lower its own either and keeps what it inherited, which is then left
    as it is and said once, in words."""
    for pid in pids:
        path = Path(f"/proc/{pid}/oom_score_adj")
        try:
            path.write_text(str(settings.JUICEFS_OOM_SCORE_ADJ))
        except PermissionError:
            _oom_score_kept(pid, path)
        except OSError as error:  # gone meanwhile: reconcile deals with dead daemons
            logger.warning("oom_score_adj of juicefs pid %s not set: %s", pid, error)


_oom_kept_said = False


def _oom_score_kept(pid: int, path: Path) -> None:
    global _oom_kept_said
    try:
        current = path.read_text().strip()
    except OSError:
        return  # gone meanwhile
    if not _oom_kept_said:
        _oom_kept_said = True
        logger.warning(
            "JuiceFS (pid %s) keeps oom_score_adj %s, not JUICEFS_OOM_SCORE_ADJ=%s: lowering it "
            "needs CAP_SYS_RESOURCE, which this agent lacks (JuiceFS could not set its own "
            "-1000 either); said once", pid, current, settings.JUICEFS_OOM_SCORE_ADJ)


def workspace_prepare(mount_point: Path) -> None:
    """A fresh volume's root belongs to the sandbox user, who runs previews and commands."""
    os.chown(mount_point, settings.SANDBOX_UID, settings.SANDBOX_UID)
    os.chmod(mount_point, 0o755)
    # A new ext4's lost+found: an empty workspace looks the same in both layouts (e2fsck makes
    # it again when a repair needs it).
    lost = mount_point / "lost+found"
    if lost.is_dir() and not lost.is_symlink() and not any(lost.iterdir()):
        lost.rmdir()


def orphan_abort(p: system.Paths, juicefs_pid: int | None = None) -> bool:
    """Abort the volume's FUSE connection when none of its JuiceFS processes can answer it.

    Killed JuiceFS processes normally take their FUSE connection with them, and requests then
    fail with ENOTCONN. But a JuiceFS server hands its /dev/fuse descriptor to its watchdog over
    a Unix socket; killed with the descriptor in flight, the connection outlives every process
    that could answer it, and each request on the mount (the agent's own `answers()` included)
    waits forever. And a watchdog killed while inside a request to its own mount (it opens the
    mount's `.config`; Go's poller asks FUSE to poll it), whose server was killed before
    answering, cannot exit: SIGKILL pending, it waits for the answer, and holds the descriptor
    that keeps the connection alive (seen in a suite run). With no JuiceFS process of the bucket
    left but such killed ones, nothing can answer: abort the connection through the kernel's
    FUSE control folder, as the descriptor's last close would have. `juicefs_pid`, the one the
    agent recorded, alive and not killed spares the scan of /proc (the usual case).
    """
    tag = system.daemon_tag(p, system.JUICEFS)
    if juicefs_pid is not None and owns(juicefs_pid, tag) and not runner.pid_killed(juicefs_pid):
        return False
    # No connection (nothing mounted: a teardown after a clean unmount) spares the scan too.
    connection = fuse_connection(p.volume_point)
    if connection is None or not (connection / "abort").exists():
        return False
    if any(not runner.pid_killed(pid) for pid in daemons(p, system.JUICEFS)):
        return False
    logger.warning("aborting the FUSE connection of %s: none of its JuiceFS processes can answer "
                   "it", p.bucket)
    (connection / "abort").write_text("1")
    return True
