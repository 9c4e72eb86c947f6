"""A command's output as the agent reads it (commands/execution.py), against the real in-sandbox
daemon (sandbox/sandboxd.py, run as the sandbox's uid, here outside a container): a command
that writes faster than its events are taken waits on its full pipe, and nothing is lost or
reordered."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from commands.execution import CommandSpec, Execution
from sandbox import bucket_spec
from weldr_agent import runner

DAEMON = Path(__file__).resolve().parents[2] / "sandbox" / "sandboxd.py"
LINES = 2_000_000  # `seq`'s output: ~15 MB, several times what the queue may hold


class Daemon:
    """What `Execution.start` needs of a bucket's sandbox: a connection to its daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self, sock: socket.socket) -> None:
        sock.connect(str(self.path))


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, Path]]:
    base = Path(tempfile.mkdtemp(prefix="weldr-flow-"))  # short: a socket path fits sun_path
    base.chmod(0o755)
    workspace = base / "workspace"
    workspace.mkdir()
    os.chown(workspace, settings.SANDBOX_UID, settings.SANDBOX_UID)
    monkeypatch.setattr(bucket_spec, "WORKSPACE", str(workspace))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(base / "daemon.sock"))
    uid = settings.SANDBOX_UID
    process = runner.popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                            "/usr/bin/python3", "-I", "-S", DAEMON],
                           stdin=listener.fileno(), stdout=None, stderr=None)
    listener.close()
    try:
        assert runner.wait_until(lambda: _listening(base / "daemon.sock"), timeout=10)
        yield Daemon(base / "daemon.sock"), workspace
    finally:
        runner.stop(process, grace=2)
        shutil.rmtree(base)


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def test_a_command_that_writes_faster_than_its_output_is_taken_waits_for_it(daemon):
    sandbox, workspace = daemon

    async def scenario() -> tuple[bytes, dict, bool, int]:
        # given a command writing ~15 MB, then leaving a mark
        execution = Execution(CommandSpec(
            bucket="flow", workspace=workspace, cwd="", env={"PATH": "/usr/bin:/bin"},
            argv=["sh", "-c", f"seq 1 {LINES}; touch written"], timeout=60, stdin=None))
        await execution.start(sandbox)
        events = execution.events()
        assert (await anext(events)).kind == "start"
        # when nothing takes its events for a second
        await asyncio.sleep(1)
        waiting = not (workspace / "written").exists()
        queued = execution._queue.qsize()
        # then (below) it had not finished: its pipe was full, the queue bounded
        output, last = bytearray(), None
        async for event in events:
            if event.kind == "stdout":
                output += event.data
            last = event
        execution.close()
        return bytes(output), last.info, waiting, queued

    output, exit_info, waiting, queued = asyncio.run(scenario())

    assert waiting and queued <= Execution.QUEUED_MAX
    # and once taken, every byte came, in order, and the command ended well
    assert output == b"".join(b"%d\n" % n for n in range(1, LINES + 1))
    assert exit_info["exit_code"] == 0 and (workspace / "written").exists()
