"""Background commands: started by POST /exec {"background": true}, followed, killed.

The command runs as an asyncio task on the server's event loop that outlives the request. Its
status lives in the state database (ExecCommand); its output is spooled to disk (each stream
capped at EXEC_OUTPUT_MAX_BYTES; commands/spool.py) for GET /exec/{id}/logs, which replays
and then follows it, also after an agent restart.
Commands end with their sandbox: at the bucket's unmount and at agent shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from commands.execution import Event, Execution
from commands.models import ExecCommand
from commands.services import exec_stream
from commands.spool import Spool, spool_prune
from weldr_agent.errors import NotFoundError

logger = logging.getLogger("weldr.exec")

# Finished commands whose logs stay readable (the oldest are forgotten first).
KEEP_FINISHED = 200


class ExecNotFound(NotFoundError):
    default_code = "no_exec"
    default_detail = "No such command."


@dataclass
class Log:
    """A command's events in order, and a way to wait for the next one."""

    events: list[Event] | Spool = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    truncated: bool = False
    done: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, event: Event) -> None:
        if event.kind in self.sizes:
            room = settings.EXEC_OUTPUT_MAX_BYTES - self.sizes[event.kind]
            if room <= 0:
                self.truncated = True
                return
            if len(event.data) > room:
                self.truncated = True
                event = Event(event.kind, event.data[:room])
            self.sizes[event.kind] += len(event.data)
        self.events.append(event)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def follow(self, start: int = 0) -> AsyncIterator[tuple[int, Event]]:
        index = start
        while True:
            while index < len(self.events):
                yield index, self.events[index]
                index += 1
            if self.done:
                return
            await self.changed.wait()


class Registry:
    """Background commands of this process by id (running ones and recently finished ones)."""

    def __init__(self) -> None:
        self.executions: dict[str, Execution] = {}
        self.logs: OrderedDict[str, Log] = OrderedDict()
        self.tasks: dict[str, asyncio.Task[None]] = {}


registry = Registry()


async def exec_background_start(*, execution: Execution, command: str | list[str]) -> ExecCommand:
    """Record a started command and keep it running after the request ends."""
    row = await sync_to_async(ExecCommand.objects.create)(
        bucket=execution.spec.bucket, command=command, cwd=execution.spec.cwd,
        pid=execution.pid)
    log = Log(events=Spool.create(row.id))
    registry.executions[row.id] = execution
    registry.logs[row.id] = log
    task = asyncio.get_running_loop().create_task(_run(row.id, execution, log))
    registry.tasks[row.id] = task
    task.add_done_callback(lambda _: registry.tasks.pop(row.id, None))
    return row


async def _run(exec_id: str, execution: Execution, log: Log) -> None:
    info: dict = {}
    try:
        async for event in exec_stream(execution=execution):
            if event.kind == "exit":
                info = event.info
            else:
                log.append(event)
    finally:
        registry.executions.pop(exec_id, None)
        # Recorded before followers see `exit`, so GET /exec/{id} agrees with the stream. Not
        # thread-sensitive: the request that started this task (and its thread) is long gone.
        await sync_to_async(_finish, thread_sensitive=False)(exec_id, info, execution.killed)
        log.append(Event("exit", info=info or {"exit_code": None, "timed_out": False}))
        log.finish()
        _forget_old()


def _finish(exec_id: str, info: dict, killed: bool) -> None:
    if info.get("timed_out"):
        status = ExecCommand.Status.TIMED_OUT
    elif killed or info.get("exit_code") is None:
        status = ExecCommand.Status.KILLED
    else:
        status = ExecCommand.Status.EXITED
    ExecCommand.objects.filter(id=exec_id).update(
        status=status, exit_code=info.get("exit_code"), finished_at=timezone.now(),
        duration_ms=info.get("duration_ms"))


def _forget_old() -> None:
    finished = [key for key, log in registry.logs.items() if log.done]
    for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
        del registry.logs[key]
    spool_prune(keep=settings.EXEC_LOGS_KEEP, running=set(registry.executions))


def exec_get(*, exec_id: str) -> ExecCommand:
    row = ExecCommand.objects.filter(id=exec_id).first()
    if row is None:
        raise ExecNotFound(f"No command with id {exec_id!r}.")
    return row


async def exec_kill(*, exec_id: str) -> None:
    """Kill a background command's whole process tree and wait until it is recorded."""
    await sync_to_async(exec_get)(exec_id=exec_id)
    execution, task = registry.executions.get(exec_id), registry.tasks.get(exec_id)
    if execution is None or task is None:
        return  # already finished
    execution.kill()
    # Shielded: a client that hangs up must not cancel the bookkeeping of the kill.
    await asyncio.shield(task)


def exec_log(*, exec_id: str) -> Log | None:
    """The command's output log (from disk when an earlier process ran it), or None."""
    log = registry.logs.get(exec_id)
    if log is None and (spool := Spool.load(exec_id)) is not None:
        log = Log(events=spool, done=True)
    return log
