"""The SDK against a real agent: a real mounted bucket, real sandboxes, a real workflow run."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest
from weldr_sdk import (
    AsyncClient,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
)

from tests.conftest import AgentProcess
from tests.sdk.conftest import write_script


def test_files_commands_and_errors_through_the_sync_client(weldr: Client, bucket: str,
                                                          tmp_path: Path):
    # given: a health check and who we are
    # (a check over its time bound on a loaded machine reads "degraded": not the SDK's concern)
    assert weldr.health()["status"] in ("ok", "degraded") and "s3" in weldr.health()["checks"]
    assert weldr.whoami()
    assert bucket in [m["bucket"] for m in weldr.mounts.list()]

    # files: write, read, list, delete
    assert weldr.files.write(bucket, "notes/a.txt", "hello\n")["size"] == 6
    assert weldr.files.read(bucket, "notes/a.txt") == b"hello\n"
    assert [e["name"] for e in weldr.files.list(bucket, "notes")] == ["a.txt"]

    # a 5 MB file streamed up and down, with progress
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    seen: list[int] = []
    assert weldr.files.upload(bucket, "big.bin", big, on_progress=seen.append)["size"] == \
        big.stat().st_size
    assert seen[-1] == big.stat().st_size and len(seen) > 1
    back = tmp_path / "back.bin"
    assert weldr.files.download(bucket, "big.bin", back) == big.stat().st_size
    assert back.read_bytes() == big.read_bytes()

    # errors carry the API's code
    with pytest.raises(NotFoundError) as missing:
        weldr.files.read(bucket, "nope.txt")
    assert missing.value.status == 404
    with pytest.raises(BadRequestError) as bad:
        weldr.files.read(bucket, "../etc/passwd")
    assert bad.value.code == "invalid_path"
    with pytest.raises(ConflictError) as unmounted:
        weldr.commands.run("sdk-not-mounted", "true")
    assert unmounted.value.code == "not_mounted"
    with pytest.raises(NotFoundError) as no_preview:
        weldr.previews.token("sdk-not-mounted", ttl_seconds=60)
    assert no_preview.value.code == "no_preview"

    # a command's result
    result = weldr.commands.run(bucket, "cat notes/a.txt; echo oops >&2; exit 3")
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (3, "hello\n", "oops\n")

    # its output streamed as it comes, stdout and stderr apart, then the exit code
    stream = weldr.commands.stream(bucket, ["sh", "-c", "echo one; sleep 0.3; echo two >&2"])
    chunks = [(c.stream, c.text) for c in stream]
    assert chunks == [("stdout", "one\n"), ("stderr", "two\n")]
    assert stream.exit_code == 0

    # a background command: logs followed to the end, wait, then one killed
    command = weldr.commands.start(bucket, "for i in 1 2 3; do echo $i; sleep 0.2; done")
    assert "".join(c.text for c in command.logs()) == "1\n2\n3\n"
    assert command.wait(timeout=30)["status"] == "exited"
    sleeper = weldr.commands.start(bucket, "sleep 60")
    sleeper.kill()
    assert sleeper.wait(timeout=30)["status"] == "killed"

    weldr.files.delete(bucket, "notes", recursive=True)
    with pytest.raises(NotFoundError):
        weldr.files.list(bucket, "notes")
    assert weldr.mounts.sync(bucket)


def test_snapshots_restore_and_fork_through_the_sdk(weldr: Client, bucket: str):
    weldr.files.write(bucket, "snap.txt", "before\n")
    snapshot = weldr.snapshots.create(bucket, name="sdk")
    assert snapshot["id"] in [s["id"] for s in weldr.snapshots.list(bucket)]
    weldr.files.write(bucket, "snap.txt", "after\n")
    weldr.snapshots.restore(bucket, snapshot["id"])
    assert weldr.files.read(bucket, "snap.txt") == b"before\n"
    fork = f"{bucket}-fork"
    assert weldr.snapshots.fork(bucket, snapshot["id"], fork)["bucket"] == fork
    try:
        assert weldr.commands.run(fork, "cat snap.txt")["stdout"] == "before\n"
    finally:
        weldr.mounts.unmount(fork, force=True)
    assert weldr.snapshots.set_policy(bucket, keep=5, max_age_days=0)["keep"] == 5
    assert weldr.snapshots.policy(bucket)["keep"] == 5
    weldr.snapshots.delete(bucket, snapshot["id"])
    with pytest.raises(NotFoundError):
        weldr.snapshots.restore(bucket, snapshot["id"])


def test_a_bad_token_raises_the_authentication_error(agent: AgentProcess):
    with Client(agent.url, token="wat_not-a-token") as stranger, \
            pytest.raises(AuthenticationError) as refused:
        stranger.mounts.list()
    assert refused.value.code == "not_authenticated"


def test_the_async_client(agent: AgentProcess, token: str, bucket: str):
    async def scenario() -> None:
        async with AsyncClient(agent.url, token=token) as weldr:
            await weldr.files.write(bucket, "async.txt", b"from async\n")
            assert await weldr.files.read(bucket, "async.txt") == b"from async\n"
            result = await weldr.commands.run(bucket, ["cat", "async.txt"])
            assert result["stdout"] == "from async\n"
            stream = weldr.commands.stream(bucket, "echo a; echo b >&2; exit 4")
            assert [(c.stream, c.text) async for c in stream] == [("stdout", "a\n"),
                                                                  ("stderr", "b\n")]
            assert stream.exit_code == 4
            command = await weldr.commands.start(bucket, "echo bg")
            assert [c.text async for c in command.logs()] == ["bg\n"]
            assert (await command.wait(timeout=30))["status"] == "exited"
            with pytest.raises(NotFoundError) as unknown:
                await weldr.commands.get("no-such-command")
            assert unknown.value.code == "no_exec"

    asyncio.run(scenario())


class CuttingProxy:
    """A TCP proxy to the agent that breaks its first connection right after the first whole
    SSE event of the answer (and a few bytes of the next): a disconnect mid-stream."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            cut = self.connections == 1
            threading.Thread(target=self._pump, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, cut),
                             daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, dest: socket.socket, cut: bool) -> None:
        seen = b""
        try:
            while data := source.recv(65536):
                if cut:
                    seen += data
                    first = seen.find(b"\nid: ")
                    end = seen.find(b"\n\n", first) if first >= 0 else -1
                    if end >= 0:
                        sent = len(seen) - len(data)
                        dest.sendall(seen[sent:end + 7])
                        break
                dest.sendall(data)
        except OSError:
            pass
        # shutdown, not only close: the other direction's thread is blocked in recv on these
        # sockets, and a close alone neither wakes it nor sends the FIN.
        for end in (source, dest):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.server.close()


def test_a_run_handle_follows_its_events_across_a_disconnect(agent: AgentProcess, token: str,
                                                             weldr: Client, bucket: str,
                                                             scripts: Path):
    # given: a branch working in the mounted bucket; a model that plans, writes a file, ends
    model = write_script(scripts, "sdk-run", [
        {"text": "The plan: one file."},
        {"text": "Writing it.", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "made.txt", "content": "made\n"}}]},
        {"text": "Done."}])
    project = weldr.workflows.create_project("sdk")
    branch = weldr.workflows.create_branch(project["id"], name="main", bucket=bucket)
    run = weldr.workflows.trigger(project["id"], branch["id"], "Make a file", model=model)
    assert weldr.workflows.run(run.id)["id"] == run.id

    # when: its events are followed through a connection that breaks after the first event
    proxy = CuttingProxy(agent.port)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", token=token, retries=3) as through:
            handle = through.workflows.run_handle(run.id)
            events: list = []
            # In a thread with a deadline: a resume that lost its place would wait forever.
            follower = threading.Thread(target=lambda: events.extend(handle.events()),
                                        daemon=True)
            follower.start()
            follower.join(timeout=60)
            assert not follower.is_alive(), f"still waiting after {events}"
    finally:
        proxy.close()

    # then: every event of the run once, in order, to its end; the SDK reconnected
    # The first connection (kept alive: the run's lookup, then the stream) broke; the SDK
    # opened another with Last-Event-ID.
    assert proxy.connections >= 2
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))
    everything = [e for e in weldr.workflows.run_handle(run.id).events()]
    assert [(e.id, e.type) for e in events] == [(e.id, e.type) for e in everything]
    assert events[0].type == "run.queued" and events[-1].type == "run.completed"
    assert weldr.files.read(bucket, "made.txt") == b"made\n"
    assert weldr.workflows.runs(project_id=project["id"])[0]["id"] == run.id
    assert weldr.workflows.integrations()
