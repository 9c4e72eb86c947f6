"""One command in a bucket's long-lived sandbox (sandbox/bucket.py): `Execution`.

The sandbox's only process is sandbox/sandboxd.py, which forks each command on request; the
agent passes the command's pipes over a unix socket (SCM_RIGHTS), so output streams from the
command straight into this process's event loop. The verbs the views call: commands/services.py.

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
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import bucket_spec
from sandbox.bucket import SANDBOX_READY_TIMEOUT, BucketSandbox, SandboxFailed
from weldr_agent.errors import APIError

logger = logging.getLogger("weldr.exec")

READ_CHUNK = 64 * 1024
# After the exit status arrives, output still buffered in the pipes is drained for this long.
DRAIN_GRACE = 2.0
# The daemon enforces the timeout; the agent gives up on a silent daemon this much later.
BACKSTOP_SECONDS = 15.0


class TooManyCommands(APIError):
    status_code = 429
    default_code = "too_many_commands"
    default_detail = "Too many commands are running on this bucket; retry when one finishes."




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

    async def start(self, sandbox: BucketSandbox) -> None:
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
    return f"{bucket_spec.WORKSPACE}/{cwd}" if cwd else bucket_spec.WORKSPACE


