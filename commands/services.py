"""The verbs of the commands app: start, stream and collect a command; the agent's own commands.

`exec_start`/`exec_stream`/`exec_collect` serve POST /exec (commands/views.py) and the
background commands (commands/background.py); `sandbox_run` runs the agent's own commands
(git, workflows' tools) from synchronous code, as the sandbox user, in the same sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from commands.execution import CommandSpec, Event, Execution, TooManyCommands
from sandbox.bucket import SandboxFailed, bucket_sandboxes

logger = logging.getLogger("weldr.exec")

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
        sandbox = await bucket_sandboxes.get(spec.bucket, spec.workspace)
        try:
            await execution.start(sandbox)
        except (ConnectionError, FileNotFoundError):
            # The sandbox died (out of memory, killed by hand): start a new one, once.
            await asyncio.to_thread(bucket_sandboxes.discard, spec.bucket, sandbox)
            execution.close()
            execution = _replace(execution)
            sandbox = await bucket_sandboxes.get(spec.bucket, spec.workspace)
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
    if bucket_sandboxes.remove(bucket):
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
