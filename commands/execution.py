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
    """A command started in a sandbox; `events()` yields its start, output and exit.

    Its descriptors (the control socket, the stdout and stderr pipes) are watched with the
    event loop's own readers and read by callbacks that put events on a queue: no transport,
    stream or task per descriptor, which cost a `true` more than the command itself
    (docs/exec.md, "Measured"). Output is read while fewer than `QUEUED_MAX` events wait in
    the queue; beyond that the pipes are not read until `events()` takes some, so a command
    that writes faster than its client reads blocks on a full pipe.
    """

    QUEUED_MAX = 64

    def __init__(self, spec: CommandSpec) -> None:
        self.spec = spec
        self.pid: int | None = None
        self.started = time.monotonic()
        self.exit: dict[str, Any] | None = None
        self.killed = False
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._control: socket.socket | None = None
        self._control_buffer = b""
        self._started: asyncio.Future[dict[str, Any]] | None = None
        self._outputs: dict[int, str] = {}  # pipe read end -> "stdout" / "stderr"
        self._paused: set[int] = set()  # outputs not read until the queue shrinks
        self._loop: asyncio.AbstractEventLoop | None = None  # set while it watches ours
        self._exit_seen = False
        self._backstop: asyncio.TimerHandle | None = None
        self._feeder: asyncio.Task[None] | None = None
        self._pipes: list[int] = []  # every descriptor of ours still open

    async def start(self, sandbox: BucketSandbox) -> None:
        """Connect to the daemon, hand over the pipes, and wait for the command's pid."""
        loop = asyncio.get_running_loop()
        stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
        stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        for fd in (stdout_r, stderr_r):  # our ends only: the command's writes block as usual
            os.set_blocking(fd, False)
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
        self._started = loop.create_future()
        self._loop = loop
        loop.add_reader(control, self._control_readable)
        try:
            message = await asyncio.wait_for(self._started, SANDBOX_READY_TIMEOUT)
        except TimeoutError:
            message = {"event": "error", "detail": "the sandbox did not answer"}
        if message.get("event") != "start":
            self.close()
            raise SandboxFailed(f"The command could not start: {message.get('detail')}")
        self.pid = message["pid"]
        self.started = time.monotonic()
        self._outputs = {stdout_r: "stdout", stderr_r: "stderr"}
        for fd in self._outputs:
            loop.add_reader(fd, self._output_readable, fd)
        if not self._exit_seen:  # a quick command's exit may have come with its start
            self._backstop = loop.call_later(self.spec.timeout + BACKSTOP_SECONDS,
                                             self._exited, {})
        if self.spec.stdin:
            self._feeder = loop.create_task(self._feed(stdin_w, self.spec.stdin))
        else:
            self._pipes.remove(stdin_w)
            os.close(stdin_w)

    def _control_readable(self) -> None:
        """The daemon's lines: `start` (or `error`) first, then `exit`; its end of file before
        the exit means the sandbox died with the command."""
        try:
            data = self._control.recv(4096)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._control_buffer += data
        while b"\n" in self._control_buffer:
            line, self._control_buffer = self._control_buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                message = {"event": "error", "detail": "the sandbox's answer is not JSON"}
            if not self._started.done():  # type: ignore[union-attr]
                self._started.set_result(message)  # type: ignore[union-attr]
            elif message.get("event") == "exit":
                self._exited(message)
        if not data:
            self._loop.remove_reader(self._control)  # type: ignore[union-attr, arg-type]
            if not self._started.done():  # type: ignore[union-attr]
                self._started.set_result({"event": "error", "detail": "sandbox closed"})
            else:
                self._exited({})

    def _exited(self, message: dict[str, Any]) -> None:
        """The exit event, once: the daemon's status, or (the daemon died or stopped
        answering: the sandbox is gone with the command) an unknown one."""
        if self._exit_seen:
            return
        self._exit_seen = True
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        if message.get("event") != "exit":
            message = {"exit_code": None, "timed_out": False}
        self._queue.put_nowait(Event("exit", info={
            "exit_code": message.get("exit_code"),
            "timed_out": bool(message.get("timed_out")),
        }))

    def _output_readable(self, fd: int) -> None:
        if self._queue.qsize() >= self.QUEUED_MAX:
            self._loop.remove_reader(fd)  # type: ignore[union-attr]
            self._paused.add(fd)
            return
        kind = self._outputs[fd]
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._queue.put_nowait(Event(kind, data))
            return
        self._loop.remove_reader(fd)  # type: ignore[union-attr]
        del self._outputs[fd]
        self._pipes.remove(fd)
        os.close(fd)
        self._queue.put_nowait(Event(f"{kind}_eof"))

    def _resume(self) -> None:
        """Read the paused outputs again once the queue has room."""
        if self._paused and self._queue.qsize() < self.QUEUED_MAX:
            for fd in self._paused:
                self._loop.add_reader(fd, self._output_readable, fd)  # type: ignore[union-attr]
            self._paused.clear()

    async def _feed(self, fd: int, data: bytes) -> None:
        self._pipes.remove(fd)  # from here on the pipe transport owns (and closes) the fd
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(asyncio.Protocol,
                                                     os.fdopen(fd, "wb", buffering=0))
        # Written in the background by the transport; a command that never reads its stdin
        # (or exits first) just makes the transport drop the rest when it closes.
        transport.write(data)
        transport.close()

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
            self._resume()
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
        if self._control is not None and self.exit is None:
            try:
                self._control.send(b'{"op": "kill"}\n')
            except OSError:
                pass  # the daemon is gone, or its buffer full: closing the socket kills too

    def close(self) -> None:
        """Release everything; closing the control socket also kills a command still running."""
        if self._feeder is not None:
            self._feeder.cancel()
        if self._backstop is not None:
            self._backstop.cancel()
            self._backstop = None
        if self._loop is not None:
            # Not watched any more before they are closed: a closed descriptor left in the
            # loop's selector could stand for the next file opened under its number.
            for fd in self._outputs:
                self._loop.remove_reader(fd)
            if self._control is not None:
                self._loop.remove_reader(self._control)
            self._loop = None
        self._outputs, self._paused = {}, set()
        if self._control is not None:
            self._control.close()
        self._control = None
        for fd in self._pipes:
            os.close(fd)
        self._pipes = []


def _fd_array(*fds: int) -> bytes:
    import array

    return array.array("i", fds).tobytes()


def _inside(cwd: str) -> str:
    return f"{bucket_spec.WORKSPACE}/{cwd}" if cwd else bucket_spec.WORKSPACE


