"""The synchronous client: `Client(url, token=...)`.

    with Client() as weldr:                      # WELDR_URL / WELDR_TOKEN or the config file
        weldr.mounts.mount("my-bucket")
        print(weldr.commands.run("my-bucket", "ls -la")["stdout"])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import httpx

from weldr_sdk import _base
from weldr_sdk.api import (
    CommandsAPI,
    FilesAPI,
    MountsAPI,
    Parse,
    PreviewsAPI,
    RootAPI,
    SnapshotsAPI,
    WorkflowsAPI,
    exec_body,
    json_body,
    uses,
)
from weldr_sdk.config import Config
from weldr_sdk.errors import WeldrConnectionError
from weldr_sdk.models import Event, ExecStatus, OutputChunk, ServerSentEvent
from weldr_sdk.sse import SSEDecoder

CHUNK = 1 << 20
Progress = Callable[[int], None] | None


class Client(_base.BaseClient, RootAPI):
    """Every API operation; `mounts`, `snapshots`, `files`, `commands`, `previews`, `workflows`."""

    mounts: MountsAPI
    snapshots: SnapshotsAPI
    files: Files
    commands: Commands
    previews: Previews
    workflows: Workflows

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 api_key: str | None = None, timeout: float | None = None,
                 retries: int | None = None, config: Config | None = None,
                 transport: httpx.BaseTransport | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self._setup(httpx.Client, config=config, transport=transport, headers=headers,
                    url=url, token=token, api_key=api_key, timeout=timeout, retries=retries,
                    namespaces={"mounts": MountsAPI, "snapshots": SnapshotsAPI, "files": Files,
                                "commands": Commands, "previews": Previews,
                                "workflows": Workflows})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the machinery ---------------------------------------------------------------------

    def _call(self, name: str, *, parse: Parse = json_body, ok: tuple[int, ...] = (),
              retry: bool = True, **request: Any) -> Any:
        op, built = self._request(name, **request)
        return self._finish(self._send(op, built, retry=retry), parse, ok)

    def _send(self, op: Any, request: httpx.Request, *, stream: bool = False,
              retry: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                if not self._should_retry(op, attempt, error=error, retry=retry):
                    raise _base.transport_error(error) from error
            else:
                if not self._should_retry(op, attempt, response=response, retry=retry):
                    return response
                response.close()
            time.sleep(self._delay(attempt))
            attempt += 1

    @contextmanager
    def _stream(self, name: str, *, retry: bool = True, **request: Any,
                ) -> Iterator[httpx.Response]:
        request.setdefault("timeout", _base.stream_timeout(self.config))
        op, built = self._request(name, **request)
        response = self._send(op, built, stream=True, retry=retry)
        try:
            if response.is_error:
                response.read()
                self._finish(response)
            yield response
        except httpx.TransportError as error:
            raise _base.transport_error(error) from error
        finally:
            response.close()

    def _events(self, name: str, **request: Any) -> Iterator[ServerSentEvent]:
        """One connection's events."""
        headers = {**_base.SSE, **request.pop("headers", {})}
        with self._stream(name, headers=headers, **request) as response:
            decoder = SSEDecoder()
            for line in response.iter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event

    def _follow(self, name: str, *, last_event_id: str | int | None = None,
                done: Callable[[ServerSentEvent], bool] = lambda e: False,
                **request: Any) -> Iterator[ServerSentEvent]:
        """Events across disconnects: on a broken or ended connection, reconnect with
        `Last-Event-ID` of the last event seen (up to `retries` failed attempts in a row)."""
        last, failures = last_event_id, 0
        while True:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            try:
                for event in self._events(name, headers=headers, **request):
                    failures = 0
                    last = event.id if event.id is not None else last
                    yield event
                    if done(event):
                        return
            except WeldrConnectionError:
                failures += 1
                if failures > max(self.config.retries, 1):
                    raise
            time.sleep(self._delay(min(failures, 4)))

    def _command(self, exec_id: str) -> Command:
        return Command(self, exec_id)

    def _run(self, run_id: str, project_id: str, branch_id: str) -> Run:
        return Run(self, run_id, project_id, branch_id)


class Files(FilesAPI):
    _client: Client

    @uses("files.read")
    def iter_bytes(self, bucket: str, path: str, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self._client._stream("files.read", path={"bucket": bucket},
                                  params={"path": path}) as response:
            yield from response.iter_bytes(chunk_size)

    def download(self, bucket: str, path: str, dest: str | os.PathLike[str], *,
                 on_progress: Progress = None) -> int:
        """Stream a file to `dest`; returns its size. `on_progress(bytes_so_far)`."""
        done = 0
        with open(dest, "wb") as out:
            for chunk in self.iter_bytes(bucket, path):
                out.write(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done)
        return done

    @uses("files.write")
    def upload(self, bucket: str, path: str,
               source: str | os.PathLike[str] | IO[bytes] | Iterable[bytes], *,
               on_progress: Progress = None) -> dict:
        """Stream a local file (a path or a binary file object) or an iterable of bytes to
        `path` without holding it in memory. `on_progress(bytes_so_far)`."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                return self.upload(bucket, path, handle, on_progress=on_progress)
        headers = {"Content-Type": "application/octet-stream"}
        size = _size_of(source)
        if size is not None:
            headers["Content-Length"] = str(size)
        return self._client._call("files.write", path={"bucket": bucket},
                                  params={"path": path}, headers=headers, retry=False,
                                  content=_chunks(source, on_progress))


def _size_of(source: Any) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size - source.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _chunks(source: Any, on_progress: Progress) -> Iterator[bytes]:
    pieces = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") else source
    done = 0
    for piece in pieces:
        done += len(piece)
        if on_progress:
            on_progress(done)
        yield piece


class Commands(CommandsAPI):
    _client: Client

    @uses("exec")
    def stream(self, bucket: str, command: str | list[str], *, cwd: str | None = None,
               env: dict[str, str] | None = None, timeout: float | None = None,
               stdin: str | None = None) -> ExecStream:
        """Run a command and iterate its output as it comes (`OutputChunk`s); the exit status
        is on the stream afterwards. Leaving the loop early hangs up, which kills it."""
        body = exec_body(bucket, command, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
        return ExecStream(self._client, body)

    def logs(self, exec_id: str) -> Iterator[OutputChunk]:
        return Command(self._client, exec_id).logs()


class ExecStream(_base.StreamedExit):
    """Iterate for `OutputChunk`s; then `exit_code`, `timed_out`, `duration_ms`."""

    def __iter__(self) -> Iterator[OutputChunk]:
        for event in self._client._events("exec", json=self._body, retry=False):
            chunk = _base.exec_item(event, self.status)
            if chunk is not None:
                yield chunk


class Command(_base.CommandHandle):
    """A background command: `status()`, `wait()`, `logs()`, `kill()`."""

    def status(self) -> ExecStatus:
        return self._client.commands.get(self.id)

    def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> ExecStatus:
        """Until it ends (or `timeout` seconds: TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status())["status"] == "running":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"command {self.id} still running after {timeout} s")
            time.sleep(poll)
        return status

    @uses("exec.logs")
    def logs(self, *, last_event_id: int | None = None) -> Iterator[OutputChunk]:
        """Its output from the start (or after `last_event_id`), following until it ends;
        reconnects with `Last-Event-ID` across disconnects."""
        events = self._client._follow("exec.logs", path={"exec_id": self.id},
                                      last_event_id=last_event_id,
                                      done=lambda e: e.event == "exit")
        for event in events:
            chunk = _base.exec_item(event, self.exit)
            if chunk is not None:
                yield chunk

    def kill(self) -> None:
        self._client.commands.kill(self.id)


class Previews(PreviewsAPI):
    _client: Client

    @uses("previews.logs")
    def follow_logs(self, bucket: str, *, tail: int = 200) -> Iterator[str]:
        """The last `tail` lines, then new ones as the app writes them, until it stops."""
        events = self._client._follow("previews.logs", path={"bucket": bucket},
                                      params={"tail": tail}, done=lambda e: e.event == "end")
        for event in events:
            line = _base.preview_line(event)
            if line is not None:
                yield line

    def url(self, bucket: str) -> str:
        return self.get(bucket)["url"]


class Workflows(WorkflowsAPI):
    _client: Client

    @uses("events")
    def events(self, project_id: str, branch_id: str, *,
               last_event_id: int | None = None) -> Iterator[Event]:
        """The branch's events after `last_event_id` (None: from now), live, forever;
        reconnects with the last id seen across disconnects and agent restarts."""
        for event in self._client._follow("events", last_event_id=last_event_id,
                                          params={"project_id": project_id,
                                                  "branch_id": branch_id}):
            yield Event.from_sse(event)

    def run_handle(self, run_id: str) -> Run:
        run = self.run(run_id)
        return Run(self._client, run_id, run["project_id"], run["branch_id"])


class Run(_base.RunHandle):
    """A workflow run: `get()`, `events()`, `wait()`."""

    def get(self) -> dict:
        return self._client.workflows.run(self.id)

    def events(self, *, last_event_id: int = 0) -> Iterator[Event]:
        """This run's events from the branch's start (or after `last_event_id`) until
        `run.completed` or `run.failed`, resuming across disconnects."""
        keep, done = _base.run_filter(self.id)
        for event in self._client._follow("events", last_event_id=last_event_id, done=done,
                                          params=self._params()):
            if keep(event):
                yield Event.from_sse(event)

    def wait(self) -> dict:
        for _ in self.events():
            pass
        return self.get()


def from_env(**overrides: Any) -> Client:
    return Client(**overrides)


__all__ = ["Client", "Command", "ExecStream", "Run", "from_env"]
