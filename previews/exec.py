"""Command execution inside a bucket's long-lived sandbox (POST /exec and background commands).

One runc container per bucket is started on the first command and kept while the bucket is
mounted. Its only process is previews/sandboxd.py, which forks each command on request; the agent
passes the command's pipes over a unix socket (SCM_RIGHTS), so output streams from the command
straight into this process's event loop.

The control socket is the agent's, not the sandbox's: the agent binds it in the sandbox's
bundle (a directory only root can enter, never mounted into the sandbox) and hands the bound
socket to the daemon as its stdin; the daemon listens on it. Nothing inside the sandbox has a
path to it, so nothing there can replace it with a link or bind an impostor in its place, and
before sending anything the agent checks the peer (SO_PEERCRED): the sandbox's uid and the
container's init, which is the daemon. A command costs a connect and two forks instead of a
`runc run` (~50 ms here, docs/sandbox.md).

Everything async here runs on the server's event loop; sandbox start/stop are blocking runtime
calls and run in a worker thread (or directly, from the unmount guard and shutdown hook).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import struct
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from previews import exec_spec
from previews import sandbox as preview_sandbox
from previews.oci import detector, hosts_file, rootfs_skeleton, runtime_root
from weldr_agent import runner
from weldr_agent.errors import APIError, ServiceUnavailable, SystemCommandError

logger = logging.getLogger("weldr.exec")

DAEMON_SOURCE = Path(__file__).with_name("sandboxd.py")
READ_CHUNK = 64 * 1024
SANDBOX_READY_TIMEOUT = 20.0
# After the exit status arrives, output still buffered in the pipes is drained for this long.
DRAIN_GRACE = 2.0
# The daemon enforces the timeout; the agent gives up on a silent daemon this much later.
BACKSTOP_SECONDS = 15.0


class TooManyCommands(APIError):
    status_code = 429
    default_code = "too_many_commands"
    default_detail = "Too many commands are running on this bucket; retry when one finishes."


class SandboxFailed(SystemCommandError):
    default_code = "sandbox_failed"


class PeerRefused(ConnectionRefusedError):
    """The control socket answered from a process that is not the sandbox's daemon."""


@dataclass
class Event:
    """`start` {"pid"}, `stdout`/`stderr` (bytes), `exit` {"exit_code", "timed_out", ...}."""

    kind: str
    data: bytes = b""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CommandSpec:
    bucket: str
    workspace: Path
    argv: list[str]
    cwd: str
    env: dict[str, str]
    timeout: float
    stdin: bytes | None


# --------------------------------------------------------------------------------------------
# The per-bucket sandbox
# --------------------------------------------------------------------------------------------


class Sandbox:
    """The bucket's exec container and the agent's control socket to its daemon."""

    def __init__(self, bucket: str, workspace: Path) -> None:
        self.bucket, self.workspace = bucket, workspace
        self.name = exec_spec.container_name(instance_id=settings.INSTANCE_ID, bucket=bucket)
        self.bundle = exec_base() / self.name
        self.runtime: str | None = None
        self.netns: preview_sandbox.Netns | None = None
        # The container's init (the daemon), as the host sees it: the only peer trusted.
        self.pid: int | None = None

    @property
    def socket_path(self) -> Path:
        return self.bundle / exec_spec.SOCKET_NAME

    def start(self) -> None:
        """Create and start the container, then wait until the daemon accepts connections."""
        name = detector.detect()
        if name is None:
            raise ServiceUnavailable(f"No OCI runtime works here: {detector.error}",
                                     code="oci_unavailable")
        self.runtime = runner.tool(name)
        self.remove()
        # With the bucket's egress policy applied (egress/services.py).
        self.netns = preview_sandbox.pool.acquire(bucket=self.bucket)
        rootfs, daemon = _shared_files()
        _private_dir(self.bundle)
        _workspace_owner(self.workspace)
        spec = exec_spec.sandbox_spec(
            name=self.name, rootfs=rootfs, workspace=self.workspace, daemon=daemon,
            uid=settings.SANDBOX_UID, memory_mb=settings.SANDBOX_MEMORY_MB,
            cpus=settings.SANDBOX_CPUS, pids=settings.SANDBOX_PIDS, hostname="sandbox",
            netns=self.netns.path,
        )
        (self.bundle / "config.json").write_text(json.dumps(spec))
        pid_file = self.bundle / "pid"
        pid_file.unlink(missing_ok=True)
        argv = exec_spec.runtime_argv(self.runtime, root=runtime_root(name), verb="run",
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
        state = runner.run(exec_spec.runtime_argv(self.runtime, root=root, verb="state",
                                                  name=self.name), timeout=30, check=False)
        argv = exec_spec.runtime_argv(self.runtime, root=root, verb="delete",
                                      name=self.name, extra=("--force",))
        runner.run(argv, timeout=30, check=False)
        _reap(state.stdout)
        if self.netns is not None:
            preview_sandbox.pool.release(self.netns)
            self.netns = None

    def _log_tail(self) -> str:
        try:
            return (self.bundle / "runtime.log").read_text(errors="replace")[-1000:].strip()
        except OSError:
            return "no runtime log"


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
    for mountpoint in exec_spec.rootfs_mountpoints(rootfs):
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


class Sandboxes:
    """The running sandboxes by bucket; shared by the server's event loop, the workflow threads
    (whose git and commands come through `sandbox_run`, on event loops of their own) and the
    unmount guard: so the locks are threading locks, never an asyncio.Lock bound to one loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_bucket: dict[str, Sandbox] = {}
        self._starting: dict[str, threading.Lock] = {}

    def _current(self, bucket: str, workspace: Path) -> Sandbox | None:
        with self._lock:
            sandbox = self._by_bucket.get(bucket)
        return sandbox if sandbox is not None and sandbox.workspace == workspace else None

    async def get(self, bucket: str, workspace: Path) -> Sandbox:
        sandbox = self._current(bucket, workspace)
        if sandbox is not None:
            return sandbox
        return await asyncio.to_thread(self._start_once, bucket, workspace)

    def _start_once(self, bucket: str, workspace: Path) -> Sandbox:
        """Start the bucket's sandbox unless another caller just did (one start at a time)."""
        with self._lock:
            starting = self._starting.setdefault(bucket, threading.Lock())
        with starting:
            sandbox = self._current(bucket, workspace)
            if sandbox is not None:
                return sandbox
            sandbox = Sandbox(bucket, workspace)
            sandbox.start()
            with self._lock:
                self._by_bucket[bucket] = sandbox
            return sandbox

    def discard(self, bucket: str, sandbox: Sandbox) -> None:
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


sandboxes = Sandboxes()


# --------------------------------------------------------------------------------------------
# One running command
# --------------------------------------------------------------------------------------------


class Execution:
    """A command started in a sandbox; `events()` yields its start, output and exit."""

    def __init__(self, spec: CommandSpec) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.started = time.monotonic()
        self.exit: dict[str, Any] | None = None
        self.killed = False
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=64)
        self._control: socket.socket | None = None
        # Once wrapped, the stream transport owns the control socket: close it through it
        # (closing the socket under it would leave a stale fd registered with the loop).
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pipes: list[int] = []

    async def start(self, sandbox: Sandbox) -> None:
        """Connect to the daemon, hand over the pipes, and wait for the command's pid."""
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        self._pipes = [stdin_w, stdout_r, stderr_r]
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._control = control
        try:
            sandbox.connect(control)
            request = {"argv": self.spec.argv, "cwd": _inside(self.spec.cwd),
                       "env": self.spec.env, "timeout": self.spec.timeout}
            payload = json.dumps(request).encode() + b"\n"
            control.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         _fd_array(stdin_r, stdout_w, stderr_w))])
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        control.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=control)
        try:
            line = await asyncio.wait_for(reader.readline(), SANDBOX_READY_TIMEOUT)
        except TimeoutError:
            line = b'{"event": "error", "detail": "the sandbox did not answer"}'
        message = json.loads(line) if line else {"event": "error", "detail": "sandbox closed"}
        if message.get("event") != "start":
            self.close()
            raise SandboxFailed(f"The command could not start: {message.get('detail')}")
        self.pid = message["pid"]
        self.started = time.monotonic()
        self._tasks = [
            loop.create_task(self._pump("stdout", stdout_r)),
            loop.create_task(self._pump("stderr", stderr_r)),
            loop.create_task(self._feed(stdin_w, self.spec.stdin or b"")),
            loop.create_task(self._await_exit(reader)),
        ]

    async def _pump(self, kind: str, fd: int) -> None:
        self._pipes.remove(fd)  # from here on the pipe transport owns (and closes) the fd
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_CHUNK * 4)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        try:
            while data := await reader.read(READ_CHUNK):
                await self._queue.put(Event(kind, data))
            await self._queue.put(Event(f"{kind}_eof"))
        finally:
            transport.close()

    async def _feed(self, fd: int, data: bytes) -> None:
        self._pipes.remove(fd)
        if not data:
            os.close(fd)
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol,
                                                     os.fdopen(fd, "wb", buffering=0))
        # Written in the background by the transport; a command that never reads its stdin
        # (or exits first) just makes the transport drop the rest when it closes.
        transport.write(data)
        transport.close()

    async def _await_exit(self, reader: asyncio.StreamReader) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(),
                                          self.spec.timeout + BACKSTOP_SECONDS)
        except TimeoutError:
            line = b""
        message = json.loads(line) if line else {}
        if message.get("event") != "exit":
            # The daemon died (or stopped answering): the sandbox is gone with the command.
            message = {"exit_code": None, "timed_out": False}
        await self._queue.put(Event("exit", info={
            "exit_code": message.get("exit_code"),
            "timed_out": bool(message.get("timed_out")),
        }))

    async def events(self) -> AsyncIterator[Event]:
        """start, then stdout/stderr chunks as they come, then exit (always last)."""
        yield Event("start", info={"pid": self.pid})
        open_streams = {"stdout", "stderr"}
        exit_event: Event | None = None
        drain_deadline = 0.0
        while open_streams or exit_event is None:
            if exit_event is not None:
                remaining = drain_deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                event = await self._queue.get()
            if event.kind.endswith("_eof"):
                open_streams.discard(event.kind[:-4])
            elif event.kind == "exit":
                exit_event = event
                drain_deadline = time.monotonic() + DRAIN_GRACE
            else:
                yield event
        info = dict(exit_event.info) if exit_event else {"exit_code": None, "timed_out": False}
        info["duration_ms"] = round((time.monotonic() - self.started) * 1000, 3)
        self.exit = info
        yield Event("exit", info=info)

    def kill(self) -> None:
        """Ask the daemon to kill the command's whole process tree."""
        self.killed = True
        if self._writer is not None and self.exit is None:
            self._writer.write(b'{"op": "kill"}\n')

    def close(self) -> None:
        """Release everything; closing the control socket also kills a command still running."""
        for task in self._tasks:
            task.cancel()
        if self._writer is not None:
            self._writer.transport.abort()
        elif self._control is not None:
            self._control.close()
        self._writer, self._control = None, None
        for fd in self._pipes:
            try:
                os.close(fd)
            except OSError:
                pass  # already owned and closed by a pipe transport
        self._pipes = []


def _fd_array(*fds: int) -> bytes:
    import array

    return array.array("i", fds).tobytes()


def _inside(cwd: str) -> str:
    return f"{exec_spec.WORKSPACE}/{cwd}" if cwd else exec_spec.WORKSPACE


# --------------------------------------------------------------------------------------------
# The services the views call
# --------------------------------------------------------------------------------------------


class Running:
    """Commands running now, by bucket: the per-bucket limit is counted here.

    Running commands are state of this process (they die with it). They are added from the
    server's event loop and from workflow threads (`sandbox_run`), so the check and the insert
    happen under one lock: two callers racing for the last place cannot both get it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_bucket: dict[str, set[Execution]] = {}

    def add(self, execution: Execution) -> None:
        with self._lock:
            current = self.by_bucket.setdefault(execution.spec.bucket, set())
            if len(current) >= settings.EXEC_MAX_CONCURRENT:
                raise TooManyCommands(
                    f"{len(current)} commands are already running on "
                    f"{execution.spec.bucket!r} (EXEC_MAX_CONCURRENT="
                    f"{settings.EXEC_MAX_CONCURRENT}).")
            current.add(execution)

    def discard(self, execution: Execution) -> None:
        with self._lock:
            self.by_bucket.get(execution.spec.bucket, set()).discard(execution)


running = Running()


async def exec_start(*, spec: CommandSpec) -> Execution:
    """Start a command in the bucket's sandbox (starting the sandbox first if needed)."""
    execution = Execution(spec)
    running.add(execution)
    try:
        sandbox = await sandboxes.get(spec.bucket, spec.workspace)
        try:
            await execution.start(sandbox)
        except (ConnectionError, FileNotFoundError):
            # The sandbox died (out of memory, killed by hand): start a new one, once.
            await asyncio.to_thread(sandboxes.discard, spec.bucket, sandbox)
            execution.close()
            execution = _replace(execution)
            sandbox = await sandboxes.get(spec.bucket, spec.workspace)
            await execution.start(sandbox)
    except BaseException:
        running.discard(execution)
        execution.close()
        raise
    return execution


def _replace(old: Execution) -> Execution:
    running.discard(old)
    new = Execution(old.spec)
    running.add(new)
    return new


async def exec_stream(*, execution: Execution) -> AsyncIterator[Event]:
    """The command's events; leaving early (a client gone) kills the command."""
    try:
        async for event in execution.events():
            yield event
    finally:
        running.discard(execution)
        execution.close()


@dataclass
class Collected:
    """Output gathered for the JSON answer, each stream capped at EXEC_OUTPUT_MAX_BYTES."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    exit: dict[str, Any] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        buffer = self.stdout if event.kind == "stdout" else self.stderr
        room = settings.EXEC_OUTPUT_MAX_BYTES - len(buffer)
        if len(event.data) > room:
            self.truncated = True
        buffer += event.data[: max(room, 0)]


async def exec_collect(*, execution: Execution) -> Collected:
    """Run to the end, keeping at most EXEC_OUTPUT_MAX_BYTES of each stream."""
    collected = Collected()
    async for event in exec_stream(execution=execution):
        if event.kind in ("stdout", "stderr"):
            collected.add(event)
        elif event.kind == "exit":
            collected.exit = event.info
    return collected


def exec_bucket_cleanup(bucket: str) -> None:
    """Kill every command of the bucket and stop its sandbox (before its unmount)."""
    if sandboxes.remove(bucket):
        logger.info("exec sandbox of %s removed", bucket)


# --------------------------------------------------------------------------------------------
# The agent's own commands (git), from synchronous code
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool


class SandboxOutputTooLarge(SandboxFailed):
    default_code = "sandbox_output_too_large"


async def _collect_bounded(spec: CommandSpec, limit: int) -> SandboxResult:
    execution = await exec_start(spec=spec)
    streams = {"stdout": bytearray(), "stderr": bytearray()}
    exit_info: dict[str, Any] = {}
    async with contextlib.aclosing(exec_stream(execution=execution)) as stream:
        async for event in stream:
            if event.kind in streams:
                streams[event.kind] += event.data
                if len(streams[event.kind]) > limit:
                    # Closing the stream kills the command; a cut listing is never parsed.
                    raise SandboxOutputTooLarge(f"`{' '.join(spec.argv[:3])}` wrote more "
                                                f"than {limit} bytes to {event.kind}.")
            elif event.kind == "exit":
                exit_info = event.info
    return SandboxResult(exit_code=exit_info.get("exit_code"), stdout=bytes(streams["stdout"]),
                         stderr=bytes(streams["stderr"]),
                         timed_out=bool(exit_info.get("timed_out")))


def sandbox_run(*, bucket: str, workspace: Path, argv: list[str], env: dict[str, str],
                timeout: float, stdin: bytes | None = None,
                max_output: int = 256 * 1024 * 1024) -> SandboxResult:
    """Run `argv` to completion in the bucket's sandbox, as its user, from synchronous code.

    This is how the agent runs its own commands on a workspace (git): whatever the workspace's
    content makes the command do, it does as the sandbox user, inside the sandbox. Called from
    a worker thread (a fresh event loop) or a sync view (the server's loop, via async_to_sync).
    Each stream is kept whole up to `max_output` bytes; beyond that the command is killed and
    SandboxOutputTooLarge raised, never a silently cut result.
    """
    spec = CommandSpec(bucket=bucket, workspace=workspace, argv=argv, cwd="", env=env,
                       timeout=timeout, stdin=stdin)
    from asgiref.sync import async_to_sync  # here: the rest of the module is async-only

    return async_to_sync(_collect_bounded)(spec, max_output)
