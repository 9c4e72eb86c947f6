"""A bucket's long-lived command sandbox: one container whose only process is sandboxd.

One runc container per bucket is started on the first command and kept while the bucket is
mounted. Its only process is sandbox/sandboxd.py, which forks each command on request (the
commands app: commands/execution.py passes each command's pipes over the control socket).

The control socket is the agent's, not the sandbox's: the agent binds it in the sandbox's
bundle (a directory only root can enter, never mounted into the sandbox) and hands the bound
socket to the daemon as its stdin; the daemon listens on it. Nothing inside the sandbox has a
path to it, so nothing there can replace it with a link or bind an impostor in its place, and
before sending anything the agent checks the peer (SO_PEERCRED): the sandbox's uid and the
container's init, which is the daemon.

Start and stop are blocking runtime calls: from a worker thread, the unmount guard or the
shutdown hook; the registry's locks are threading locks for that reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import stat
import struct
import threading
from pathlib import Path

from django.conf import settings

from sandbox import bucket_spec, network
from sandbox.oci import hosts_file, rootfs_skeleton
from sandbox.runtime import detector, runtime_root
from weldr_agent import runner
from weldr_agent.errors import ServiceUnavailable, SystemCommandError

logger = logging.getLogger("weldr.exec")

DAEMON_SOURCE = Path(__file__).with_name("sandboxd.py")
SANDBOX_READY_TIMEOUT = 20.0


class SandboxFailed(SystemCommandError):
    default_code = "sandbox_failed"


class PeerRefused(ConnectionRefusedError):
    """The control socket answered from a process that is not the sandbox's daemon."""

# --------------------------------------------------------------------------------------------
# The per-bucket sandbox
# --------------------------------------------------------------------------------------------


class BucketSandbox:
    """The bucket's exec container and the agent's control socket to its daemon."""

    def __init__(self, bucket: str, workspace: Path) -> None:
        self.bucket, self.workspace = bucket, workspace
        self.name = bucket_spec.container_name(instance_id=settings.INSTANCE_ID, bucket=bucket)
        self.bundle = exec_base() / self.name
        self.runtime: str | None = None
        self.netns: network.Netns | None = None
        # The container's init (the daemon), as the host sees it: the only peer trusted.
        self.pid: int | None = None

    @property
    def socket_path(self) -> Path:
        return self.bundle / bucket_spec.SOCKET_NAME

    def start(self) -> None:
        """Create and start the container, then wait until the daemon accepts connections."""
        name = detector.detect()
        if name is None:
            raise ServiceUnavailable(f"No OCI runtime works here: {detector.error}",
                                     code="oci_unavailable")
        self.runtime = runner.tool(name)
        self.remove()
        # With the bucket's egress policy applied (egress/services.py).
        self.netns = network.netns_pool.acquire(bucket=self.bucket)
        rootfs, daemon = _shared_files()
        _private_dir(self.bundle)
        _workspace_owner(self.workspace)
        spec = bucket_spec.sandbox_spec(
            name=self.name, rootfs=rootfs, workspace=self.workspace, daemon=daemon,
            uid=settings.SANDBOX_UID, memory_mb=settings.SANDBOX_MEMORY_MB,
            cpus=settings.SANDBOX_CPUS, pids=settings.SANDBOX_PIDS, hostname="sandbox",
            netns=self.netns.path,
        )
        (self.bundle / "config.json").write_text(json.dumps(spec))
        pid_file = self.bundle / "pid"
        pid_file.unlink(missing_ok=True)
        argv = bucket_spec.runtime_argv(self.runtime, root=runtime_root(name), verb="run",
                                      name=self.name, bundle=self.bundle,
                                      extra=("-d", "--pid-file", str(pid_file)))
        # Bound here, listened on by the daemon (so SO_PEERCRED names the daemon), reaching it
        # as its stdin: `runc run -d` hands its stdio to the container as they are.
        listener = bind_unix(self.socket_path)
        try:
            # runc's stdout/stderr: a log file, never a pipe (docs/sandbox.md).
            process = runner.spawn(argv, log_path=self.bundle / "runtime.log",
                                   stdin=listener.fileno())
        finally:
            listener.close()
        if not runner.wait_until(lambda: process.poll() is not None,
                                 timeout=SANDBOX_READY_TIMEOUT, interval=0.005):
            runner.stop(process)
            raise SandboxFailed(f"The sandbox did not start in time: {self._log_tail()}")
        self.pid = _read_pid(pid_file) if process.returncode == 0 else None
        try:
            ready = self.pid is not None and runner.wait_until(
                self.accepting, timeout=SANDBOX_READY_TIMEOUT, interval=0.005)
        except PeerRefused:
            ready = False
        if not ready:
            tail = self._log_tail()
            self.remove()
            raise SandboxFailed(f"The command sandbox for {self.bucket!r} failed to start: {tail}")
        logger.info("exec sandbox %s started", self.name)

    def connect(self, sock: socket.socket) -> None:
        """Connect `sock` to the daemon; PeerRefused unless the daemon is what answers."""
        connect_unix(sock, self.socket_path)
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid != settings.SANDBOX_UID or pid != self.pid:
            logger.error("refused the control socket of %s: its peer is pid %s uid %s, not the "
                         "sandbox's daemon (pid %s)", self.name, pid, uid, self.pid)
            raise PeerRefused(f"The control socket of {self.name} is not served by its daemon.")

    def accepting(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.connect(probe)
            return True
        except PeerRefused:
            raise
        except OSError:
            return False
        finally:
            probe.close()

    def remove(self) -> None:
        """Kill every process of the sandbox and delete the container (idempotent)."""
        if self.runtime is None:
            return
        name = Path(self.runtime).name
        root = runtime_root(name)
        state = runner.run(bucket_spec.runtime_argv(self.runtime, root=root, verb="state",
                                                  name=self.name), timeout=30, check=False)
        argv = bucket_spec.runtime_argv(self.runtime, root=root, verb="delete",
                                      name=self.name, extra=("--force",))
        runner.run(argv, timeout=30, check=False)
        _reap(state.stdout)
        if self.netns is not None:
            network.netns_pool.release(self.netns)
            self.netns = None

    def _log_tail(self) -> str:
        return runner.log_tail(self.bundle / "runtime.log", 1000) or "no runtime log"


def _reap(state: str) -> None:
    """The container's init is our child when the agent is a subreaper (previews make it one):
    collect its exit so it does not linger as a zombie."""
    try:
        pid = int(json.loads(state)["pid"])
    except (ValueError, KeyError, TypeError):
        return
    if pid > 0 and runner.wait_until(lambda: not runner.pid_alive(pid), timeout=5):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours: reparented elsewhere (the agent is not a subreaper)


def exec_base() -> Path:
    return settings.RUNTIME_DIR / "exec"


def _shared_files() -> tuple[Path, Path]:
    """The read-only rootfs skeleton and a world-readable copy of the daemon, shared by all."""
    base = exec_base()
    rootfs = base / "rootfs"
    rootfs_skeleton(rootfs)
    hosts_file()
    for mountpoint in bucket_spec.rootfs_mountpoints(rootfs):
        mountpoint.mkdir(parents=True, exist_ok=True)
    (rootfs / "opt" / "weldr" / "sandboxd.py").touch()
    daemon = base / "sandboxd.py"
    shutil.copyfile(DAEMON_SOURCE, daemon)
    daemon.chmod(0o644)
    return rootfs, daemon


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _private_dir(path: Path) -> None:
    """The sandbox's bundle: root's, mode 0700, a real directory (not a link)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _workspace_owner(workspace: Path) -> None:
    """The sandbox's non-root uid must be able to write the workspace root."""
    if workspace.stat().st_uid != settings.SANDBOX_UID:
        os.chown(workspace, settings.SANDBOX_UID, settings.SANDBOX_UID)


def _at(path: Path) -> int:
    """An O_PATH descriptor of `path`'s directory, refusing a link in its place."""
    return os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def connect_unix(sock: socket.socket, path: Path) -> None:
    """Connect to the socket `path`, never through a link: the directory is opened without
    following one, and the name must be a socket itself (connect() would follow a link).
    Through /proc/self/fd, so that long runtime paths fit sun_path (108 bytes)."""
    fd = _at(path)
    try:
        mode = os.stat(path.name, dir_fd=fd, follow_symlinks=False).st_mode
        if not stat.S_ISSOCK(mode):
            raise ConnectionRefusedError(f"{path} is not a socket")
        sock.connect(f"/proc/self/fd/{fd}/{path.name}")
    finally:
        os.close(fd)


def bind_unix(path: Path) -> socket.socket:
    """A unix stream socket bound (not listening) at `path`, replacing a stale one."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    fd = _at(path)
    try:
        try:
            os.unlink(path.name, dir_fd=fd)
        except FileNotFoundError:
            pass
        sock.bind(f"/proc/self/fd/{fd}/{path.name}")
    except BaseException:
        sock.close()
        raise
    finally:
        os.close(fd)
    return sock


class BucketSandboxes:
    """The running sandboxes by bucket; shared by the server's event loop, the workflow threads
    (whose git and commands come through `sandbox_run`, on event loops of their own) and the
    unmount guard: so the locks are threading locks, never an asyncio.Lock bound to one loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_bucket: dict[str, BucketSandbox] = {}
        self._starting: dict[str, threading.Lock] = {}

    def _current(self, bucket: str, workspace: Path) -> BucketSandbox | None:
        with self._lock:
            sandbox = self._by_bucket.get(bucket)
        return sandbox if sandbox is not None and sandbox.workspace == workspace else None

    async def get(self, bucket: str, workspace: Path) -> BucketSandbox:
        sandbox = self._current(bucket, workspace)
        if sandbox is not None:
            return sandbox
        return await asyncio.to_thread(self._start_once, bucket, workspace)

    def _start_once(self, bucket: str, workspace: Path) -> BucketSandbox:
        """Start the bucket's sandbox unless another caller just did (one start at a time)."""
        with self._lock:
            starting = self._starting.setdefault(bucket, threading.Lock())
        with starting:
            sandbox = self._current(bucket, workspace)
            if sandbox is not None:
                return sandbox
            sandbox = BucketSandbox(bucket, workspace)
            sandbox.start()
            with self._lock:
                self._by_bucket[bucket] = sandbox
            return sandbox

    def discard(self, bucket: str, sandbox: BucketSandbox) -> None:
        """Remove a sandbox found dead or untrustworthy (its container, its network namespace
        back to the pool), unless another caller already replaced it."""
        with self._lock:
            if self._by_bucket.get(bucket) is not sandbox:
                return
            del self._by_bucket[bucket]
        sandbox.remove()

    def remove(self, bucket: str) -> bool:
        """Stop the bucket's sandbox (every command in it dies); True when there was one."""
        with self._lock:
            sandbox = self._by_bucket.pop(bucket, None)
        if sandbox is None:
            return False
        sandbox.remove()
        shutil.rmtree(sandbox.bundle, ignore_errors=True)
        return True

    def remove_all(self) -> None:
        with self._lock:
            buckets = list(self._by_bucket)
        for bucket in buckets:
            self.remove(bucket)


bucket_sandboxes = BucketSandboxes()
