"""Warm sandboxes: preview containers started ahead of time, given their app when a preview asks.

`runc run` costs ~50 ms even idle (two Go runtimes, ~30 mounts, the cgroup; docs/sandbox.md), which
alone was the issue's whole budget. A warm sandbox is a container `runc run`
off the critical path, in a network namespace from the pool: namespaces, mounts, cgroup and
limits are in place and its process is a shell blocked reading the slot's start fifo (a few
hundred KB, where a container created and not started keeps a Go `runc init` of ~2 MB). A start
only fills in what depends on the bucket and then writes a line to the fifo (~0.1 ms):

- command and environment: the shell then execs `/bin/sh /.weldr/run.sh`; `/.weldr` is the
  slot's directory (read-only inside) and run.sh is written into it at the start, before the
  line;
- the workspace: WORKSPACE_BASE inside is the slot's empty `ws` directory, read-only and a mount
  slave of the host's; the start bind-mounts the bucket's workspace into it on the host
  (nosuid, nodev) and the mount propagates into the container, at the workspace's own path;
- the log: the container's stdout/stderr is `apps/.warm/<slot>.log` on the env volume; the
  start renames it to `apps/{bucket}/app.log` (same inode: the container's O_APPEND fd follows).

Everything the issue asks of a preview's sandbox holds as for a cold one (own netns with a veth
from the pool, own pid/mount/ipc/uts namespaces, its own cgroup and limits, non-root, no
capabilities); only the hostname is a fixed `preview`. A preview whose workspace is not under
WORKSPACE_BASE, or a start while the pool is empty, takes the cold path (`runc run`).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shlex
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandbox import container, network
from sandbox.pool import MadeAheadPool
from weldr_agent import runner

logger = logging.getLogger("weldr.previews")

# A refill waits this long after the last start: `runc run` is ~50 ms of CPU that would
# otherwise compete with the app that just started (2 cores here).
REFILL_DELAY_SECONDS = 1.0
# ... and while more tasks are runnable than there are CPUs (apps still starting, a burst of
# cold starts), for at most this long.
REFILL_BUSY_MAX_SECONDS = 10.0
# Starts this close together make one burst: the pool grows to their number (at most
# PREVIEW_WARM_POOL_BURST) and shrinks back PREVIEW_WARM_POOL_BURST_SECONDS after the last one.
BURST_WINDOW_SECONDS = 10.0
# A sandbox beyond the resting size is made only this long after the last start: a burst's
# cold starts run for seconds, and twenty `runc run`s in their tail would slow them.
GROW_DELAY_SECONDS = 5.0
HOSTNAME = "preview"
# A warm sandbox's process until its start: one line on the fifo, then the app's run.sh. A read
# cut short (the agent gone: end of file) exits instead.
START_FIFO = "start"
WAIT_ARGS = ["/bin/sh", "-c", f"read -r _ < /.weldr/{START_FIFO} && exec /bin/sh /.weldr/run.sh"]

MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 0x2, 0x4, 0x20, 0x1000, 0x4000
MS_PRIVATE, MS_SHARED = 1 << 18, 1 << 20
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | Path | None, target: Path, flags: int) -> None:
    src = str(source).encode() if source is not None else None
    if _libc.mount(src, str(target).encode(), None, flags, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {source} on {target}: {os.strerror(code)}")


def _mounted(path: Path) -> bool:
    """Whether `path` is a mount point (os.path.ismount misses binds within one filesystem)."""
    wanted = str(path).encode()
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table:
            # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            point = line.split(b" ", 5)[4]
            if b"\\" in point:
                point = point.decode("unicode_escape").encode("latin-1")
            if point == wanted:
                return True
    return False


def _umount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"umount {target}: {os.strerror(code)}")


# ---------------------------------------------------------------------------------------------
# Paths and the slot's run.sh (pure)
# ---------------------------------------------------------------------------------------------

def slots_dir() -> Path:
    return settings.RUNTIME_DIR / "slots"


def log_dir() -> Path:
    # On the env volume next to apps/{bucket}/: a rename, not a copy, makes it the app's log.
    return settings.WELDR_ENV_VOL / "apps" / ".warm"


def container_name(slot: int) -> str:
    # '_' is not allowed in bucket names: no clash with a bucket's container name.
    return f"{container.container_prefix()}warm_{slot}"


def slot_script(*, workspace: Path, env: Mapping[str, str], run_script: str) -> str:
    """/.weldr/run.sh of a warm sandbox: the app's environment and directory, then run.sh."""
    lines = ["#!/bin/sh", "# Written by Weldr Agent: the preview's environment, then its run.sh."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    lines.append(f"cd {shlex.quote(str(workspace))} || exit 126")
    body = run_script.split("\n", 1)[1] if run_script.startswith("#!") else run_script
    return "\n".join(lines) + "\n" + body


# ---------------------------------------------------------------------------------------------
# The pool (its filler thread is sandbox/pool.py's, shared with the netns pool)
# ---------------------------------------------------------------------------------------------

@dataclass
class Warm:
    """A preview container waiting for its app, and what it holds."""

    slot: int
    ns: network.Netns
    box: container.Container
    directory: Path
    log: Path
    bound: Path | None = None

    @property
    def script(self) -> Path:
        return self.directory / "weldr" / "run.sh"

    @property
    def fifo(self) -> Path:
        return self.directory / "weldr" / START_FIFO


class WarmPool(MadeAheadPool[Warm]):
    """`size` waiting containers, made by a filler thread (sandbox/pool.py) that holds back
    while a start is recent or the CPUs are busy: `runc run` would compete with the app."""

    thread_name = "warm-pool"
    what = "a warm preview sandbox"
    retry_seconds = 5.0

    def __init__(self, size: int | None = None) -> None:
        super().__init__()
        self._size_given = size
        self._claimed: set[int] = set()
        # Slots whose container the filler is making: not yet ready, but not stale either (a
        # reset meanwhile — previews' start-up reconcile — must not remove them under it).
        self._making: set[int] = set()
        self._started = False
        # When a start last took a sandbox; None: never (not "at time zero", which on a machine
        # booted a second ago would hold the first fill back).
        self._taken_at: float | None = None
        # Since when the filler has held back for busy CPUs (it gives up after a while).
        self._busy_since: float | None = None
        # Recent starts, and the largest burst of them lately and when it was last reached.
        self._takes: deque[float] = deque()
        self._burst = 0
        self._burst_at: float | None = None

    @property
    def size(self) -> int:
        """PREVIEW_WARM_POOL at rest; after a burst of starts, as many as the burst took (at
        most PREVIEW_WARM_POOL_BURST) until PREVIEW_WARM_POOL_BURST_SECONDS have passed."""
        return pool_size(resting=self._resting(), burst=self._burst,
                         burst_age=self._burst_age())

    def _resting(self) -> int:
        return settings.PREVIEW_WARM_POOL if self._size_given is None else self._size_given

    def _burst_age(self) -> float:
        return float("inf") if self._burst_at is None else time.monotonic() - self._burst_at

    def _full_wait(self) -> float | None:
        """While grown: wake when the burst has aged out, to shrink back to the resting size."""
        if self._burst_at is None:
            return None
        left = settings.PREVIEW_WARM_POOL_BURST_SECONDS - self._burst_age()
        return left if left > 0 else None

    def _demand(self, now: float) -> None:
        """Count a start (with the lock held): the starts of the last BURST_WINDOW_SECONDS are
        the burst a grown pool is sized for, kept while it recurs."""
        self._takes.append(now)
        while self._takes and now - self._takes[0] > BURST_WINDOW_SECONDS:
            self._takes.popleft()
        if len(self._takes) >= (self._burst if self._burst_age() <
                                settings.PREVIEW_WARM_POOL_BURST_SECONDS else 0):
            self._burst, self._burst_at = len(self._takes), now

    # -- life of the pool ----------------------------------------------------------------------

    def start(self) -> None:
        """Clear what a previous agent left and start filling (idempotent)."""
        with self._lock:
            if self._started or self.size <= 0:
                return
            self._started = True
            self._closed = False
        self.reset()
        self._filler_start()

    def reset(self) -> None:
        """Delete this instance's warm containers and slots that this pool does not hold."""
        with self._lock:
            held = {warm.slot for warm in self._ready} | self._claimed | self._making
        try:
            names = container.containers()
        except runner.CommandError:
            names = []
        for name in names:
            slot = name.removeprefix(container_name(0)[:-1])
            if slot != name and slot.isdigit() and int(slot) not in held:
                container.container_delete(name)
        if slots_dir().is_dir():
            for directory in slots_dir().iterdir():
                if not (directory.name.isdigit() and int(directory.name) in held):
                    _slot_remove(directory)

    def shutdown(self) -> None:
        with self._lock:
            self._started = False
        # A container being created now must not outlive the pool.
        for warm in self._close(join=60):
            self._discard(warm)
        self.reset()
        with self._lock:
            idle = not self._claimed
        if idle:
            pool_unmount()

    def _since_taken(self) -> float:
        return float("inf") if self._taken_at is None else time.monotonic() - self._taken_at

    def _hold(self) -> float | None:
        """A second after the last start (GROW_DELAY_SECONDS for a sandbox beyond the resting
        size), and while the CPUs are busy (for at most REFILL_BUSY_MAX_SECONDS), the filler
        waits."""
        since = self._since_taken()
        delay = REFILL_DELAY_SECONDS
        if len(self._ready) >= self._resting():
            delay = max(delay, GROW_DELAY_SECONDS)
        if since < delay:
            self._busy_since = None
            return delay - since
        now = time.monotonic()
        if _busy():
            self._busy_since = now if self._busy_since is None else self._busy_since
            if now - self._busy_since < REFILL_BUSY_MAX_SECONDS:
                return 0.1
        self._busy_since = None
        return 0.0

    def _make(self) -> Warm:
        """A waiting warm container; its slot stays in `_making` until the filler holds it."""
        ns = network.netns_pool.acquire()
        with self._lock:
            self._making.add(ns.slot)
        directory = slots_dir() / str(ns.slot)
        try:
            _slot_prepare(directory)
            log = log_dir() / f"{ns.slot}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(b"")
            spec = container.Spec(
                name=container_name(ns.slot), workspace=settings.WORKSPACE_BASE,
                workspace_from=directory / "ws", cwd=Path("/"),
                args=WAIT_ARGS, netns=ns.path, hostname=HOSTNAME,
                binds=[(directory / "weldr", "/.weldr", True)],
            )
            box = container.Container(spec, log_path=log)
            warm = Warm(slot=ns.slot, ns=ns, box=box, directory=directory, log=log)
            # Readable by the sandbox's user only, and not writable by anyone inside: mode 0400
            # on a read-only mount (no chmod there).
            os.mkfifo(warm.fifo, 0o400)
            os.chown(warm.fifo, settings.SANDBOX_UID, settings.SANDBOX_UID)
            box.on_exit = lambda _box, _code: self._died(warm)
            box.start()
        except Exception:
            _slot_remove(directory)
            network.netns_pool.release(ns)
            with self._lock:
                self._making.discard(ns.slot)
            raise
        return warm

    def _made(self, warm: Warm) -> None:
        self._making.discard(warm.slot)

    def _died(self, warm: Warm) -> None:
        """A warm container ended before anyone started it (killed): forget it."""
        with self._lock:
            if warm not in self._ready:
                return
            self._ready.remove(warm)
            self._lock.notify_all()
        self._discard(warm)

    def _discard(self, warm: Warm) -> None:
        warm.box.destroy()
        self.release(warm)

    # -- a preview's use of it -----------------------------------------------------------------

    def take(self, workspace: Path) -> Warm | None:
        """A warm sandbox for `workspace`, or None (empty pool, workspace elsewhere)."""
        self.start()
        if self.size <= 0 or workspace.parent != settings.WORKSPACE_BASE:
            return None
        with self._lock:
            self._taken_at = time.monotonic()
            self._demand(self._taken_at)
            while (warm := self._pop()) is not None:
                if warm.box.running:
                    self._claimed.add(warm.slot)
                    return warm
                threading.Thread(target=self._discard, args=(warm,), daemon=True).start()
            self._lock.notify_all()
        return None

    def begin(self, warm: Warm, *, workspace: Path, env: Mapping[str, str], run_script: str,
              log_path: Path) -> None:
        """Give `warm` its command, workspace and log, then start its process."""
        # The app's environment may hold secrets: readable by the sandbox's user only.
        fd = os.open(warm.script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "w") as script:
            os.fchown(script.fileno(), settings.SANDBOX_UID, settings.SANDBOX_UID)
            script.write(slot_script(workspace=workspace, env=env, run_script=run_script))
        inside = warm.directory / "ws" / workspace.name
        inside.mkdir(exist_ok=True)
        stage = warm.directory / "stage"
        # Flags of a propagated mount are those it had when bound: set them on a private
        # staging bind first, then bind that into the shared directory.
        _mount(workspace, stage, MS_BIND | MS_REC)
        try:
            _mount(None, stage, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
            _mount(stage, inside, MS_BIND | MS_REC)
        finally:
            _umount(stage)
        warm.bound = inside
        # The previous app.log was rotated to app.log.1 by the caller.
        warm.log.replace(log_path)
        warm.box.log_path = log_path
        _go(warm)

    def release(self, warm: Warm) -> None:
        """After the container is deleted: unbind the workspace, free the slot and netns."""
        _slot_remove(warm.directory)
        warm.log.unlink(missing_ok=True)
        network.netns_pool.release(warm.ns)
        with self._lock:
            self._claimed.discard(warm.slot)
            self._lock.notify_all()


def _go(warm: Warm, timeout: float = 10.0) -> None:
    """Let the waiting shell exec run.sh: a line on the start fifo. Opened without blocking: a
    shell not reading yet (just started) is waited for; one that is gone fails the start."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(warm.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            break
        except OSError as error:
            # ENXIO: no reader (yet).
            if error.errno != errno.ENXIO or not warm.box.running \
                    or time.monotonic() > deadline:
                raise container.SandboxError(["start"], "The warm sandbox is not waiting.") \
                    from error
            time.sleep(0.001)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def pool_size(*, resting: int, burst: int, burst_age: float) -> int:
    """How many warm sandboxes to keep (pure): `resting`, or after a burst of `burst` starts
    `burst_age` seconds ago, up to PREVIEW_WARM_POOL_BURST of them. A pool turned off
    (`resting` 0) stays off."""
    if resting <= 0 or burst_age >= settings.PREVIEW_WARM_POOL_BURST_SECONDS:
        return max(resting, 0)
    return max(resting, min(burst, settings.PREVIEW_WARM_POOL_BURST))


def _busy() -> bool:
    """More tasks runnable right now than CPUs (/proc/loadavg's 4th field; this one excluded)."""
    try:
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return running - 1 >= (os.cpu_count() or 1)


def _slots_root() -> Path:
    """RUNTIME_DIR/slots, a private mount: binds below it stay out of the host's peer groups."""
    base = slots_dir()
    base.mkdir(parents=True, exist_ok=True)
    if not _mounted(base):
        _mount(base, base, MS_BIND)
        _mount(None, base, MS_PRIVATE | MS_REC)
    return base


def _slot_prepare(directory: Path) -> None:
    """The slot's directories; `ws` a shared mount point (its binds reach the container)."""
    _slots_root()
    _slot_remove(directory)
    for sub in ("weldr", "ws", "stage"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    ws = directory / "ws"
    _mount(ws, ws, MS_BIND)
    _mount(None, ws, MS_SHARED)


def _unmount_all(point: Path) -> None:
    for _ in range(8):  # stacked mounts; bounded, in case one cannot be unmounted
        if not _mounted(point):
            return
        _umount(point)


def _slot_remove(directory: Path) -> None:
    """Unmount everything of a slot (lazily: the container may still hold it) and remove it.

    Never a recursive delete: a directory that still had a workspace bound would lose it.
    """
    ws = directory / "ws"
    if ws.is_dir() and not os.path.islink(ws):
        for bound in ws.iterdir():
            _unmount_all(bound)
            _rmdir(bound)
    for point in (ws, directory / "stage"):
        _unmount_all(point)
    for name in ("run.sh", START_FIFO):
        (directory / "weldr" / name).unlink(missing_ok=True)
    for sub in ("ws", "stage", "weldr", ""):
        _rmdir(directory / sub)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("could not remove %s: %s", path, error)


def pool_unmount() -> None:
    """At shutdown, after the last slot is gone: the private mount of the slots directory."""
    _unmount_all(slots_dir())


warm_pool = WarmPool()
