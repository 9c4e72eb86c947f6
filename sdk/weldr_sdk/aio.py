"""The asynchronous client: `AsyncClient(url, token=...)`, the same operations awaited, streams
as async iterators.

    async with AsyncClient() as weldr:
        async for chunk in weldr.commands.stream("my-bucket", "npm test"):
            print(chunk.text, end="")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

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
from weldr_sdk.client import CHUNK, Progress, _size_of
from weldr_sdk.config import Config
from weldr_sdk.errors import WeldrConnectionError
from weldr_sdk.models import Event, ExecStatus, OutputChunk, ServerSentEvent
from weldr_sdk.sse import SSEDecoder


class AsyncClient(_base.BaseClient, RootAPI):
    """Every API operation, awaited; `mounts`, `snapshots`, `files`, `commands`, `previews`,
    `workflows`."""

    mounts: MountsAPI
    snapshots: SnapshotsAPI
    files: AsyncFiles
    commands: AsyncCommands
    previews: AsyncPreviews
    workflows: AsyncWorkflows

    def __init__(self, url: str | None = None, *, token: str | None = None,
                 api_key: str | None = None, timeout: float | None = None,
                 retries: int | None = None, config: Config | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self._setup(httpx.AsyncClient, config=config, transport=transport, headers=headers,
                    url=url, token=token, api_key=api_key, timeout=timeout, retries=retries,
                    namespaces={"mounts": MountsAPI, "snapshots": SnapshotsAPI,
                                "files": AsyncFiles, "commands": AsyncCommands,
                                "previews": AsyncPreviews, "workflows": AsyncWorkflows})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the machinery ---------------------------------------------------------------------

    async def _call(self, name: str, *, parse: Parse = json_body, ok: tuple[int, ...] = (),
                    retry: bool = True, **request: Any) -> Any:
        op, built = self._request(name, **request)
        return self._finish(await self._send(op, built, retry=retry), parse, ok)

    async def _send(self, op: Any, request: httpx.Request, *, stream: bool = False,
                    retry: bool = True) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as error:
                if not self._should_retry(op, attempt, error=error, retry=retry):
                    raise _base.transport_error(error) from error
            else:
                if not self._should_retry(op, attempt, response=response, retry=retry):
                    return response
                await response.aclose()
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    @asynccontextmanager
    async def _stream(self, name: str, *, retry: bool = True, **request: Any,
                      ) -> AsyncIterator[httpx.Response]:
        request.setdefault("timeout", _base.stream_timeout(self.config))
        op, built = self._request(name, **request)
        response = await self._send(op, built, stream=True, retry=retry)
        try:
            if response.is_error:
                await response.aread()
                self._finish(response)
            yield response
        except httpx.TransportError as error:
            raise _base.transport_error(error) from error
        finally:
            await response.aclose()

    async def _events(self, name: str, **request: Any) -> AsyncIterator[ServerSentEvent]:
        headers = {**_base.SSE, **request.pop("headers", {})}
        async with self._stream(name, headers=headers, **request) as response:
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event

    async def _follow(self, name: str, *, last_event_id: str | int | None = None,
                      done: Callable[[ServerSentEvent], bool] = lambda e: False,
                      **request: Any) -> AsyncIterator[ServerSentEvent]:
        """As `Client._follow`: reconnect with `Last-Event-ID` across disconnects."""
        last, failures = last_event_id, 0
        while True:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            try:
                async for event in self._events(name, headers=headers, **request):
                    failures = 0
                    last = event.id if event.id is not None else last
                    yield event
                    if done(event):
                        return
            except WeldrConnectionError:
                failures += 1
                if failures > max(self.config.retries, 1):
                    raise
            await asyncio.sleep(self._delay(min(failures, 4)))

    def _command(self, exec_id: str) -> AsyncCommand:
        return AsyncCommand(self, exec_id)

    def _run(self, run_id: str, project_id: str, branch_id: str) -> AsyncRun:
        return AsyncRun(self, run_id, project_id, branch_id)


class AsyncFiles(FilesAPI):
    _client: AsyncClient

    @uses("files.read")
    async def iter_bytes(self, bucket: str, path: str, *,
                         chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        async with self._client._stream("files.read", path={"bucket": bucket},
                                        params={"path": path}) as response:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk

    async def download(self, bucket: str, path: str, dest: str | os.PathLike[str], *,
                       on_progress: Progress = None) -> int:
        done = 0
        with open(dest, "wb") as out:
            async for chunk in self.iter_bytes(bucket, path):
                out.write(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done)
        return done

    @uses("files.write")
    async def upload(self, bucket: str, path: str, source: str | os.PathLike[str] | Any, *,
                     on_progress: Progress = None) -> dict:
        """Stream a local file, a binary file object or an async iterable of bytes."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as handle:
                return await self.upload(bucket, path, handle, on_progress=on_progress)
        headers = {"Content-Type": "application/octet-stream"}
        size = _size_of(source)
        if size is not None:
            headers["Content-Length"] = str(size)
        return await self._client._call("files.write", path={"bucket": bucket},
                                        params={"path": path}, headers=headers, retry=False,
                                        content=_achunks(source, on_progress))


async def _achunks(source: Any, on_progress: Progress) -> AsyncIterator[bytes]:
    done = 0
    if hasattr(source, "read"):
        while piece := await asyncio.to_thread(source.read, CHUNK):
            done += len(piece)
            if on_progress:
                on_progress(done)
            yield piece
        return
    async for piece in source:
        done += len(piece)
        if on_progress:
            on_progress(done)
        yield piece


class AsyncCommands(CommandsAPI):
    _client: AsyncClient

    @uses("exec")
    def stream(self, bucket: str, command: str | list[str], *, cwd: str | None = None,
               env: dict[str, str] | None = None, timeout: float | None = None,
               stdin: str | None = None) -> AsyncExecStream:
        """`async for chunk in ...`: the output as it comes; then `exit_code`."""
        body = exec_body(bucket, command, cwd=cwd, env=env, timeout=timeout, stdin=stdin)
        return AsyncExecStream(self._client, body)

    def logs(self, exec_id: str) -> AsyncIterator[OutputChunk]:
        return AsyncCommand(self._client, exec_id).logs()


class AsyncExecStream(_base.StreamedExit):
    """`async for` the `OutputChunk`s; then `exit_code`, `timed_out`, `duration_ms`."""

    async def __aiter__(self) -> AsyncIterator[OutputChunk]:
        async for event in self._client._events("exec", json=self._body, retry=False):
            chunk = _base.exec_item(event, self.status)
            if chunk is not None:
                yield chunk


class AsyncCommand(_base.CommandHandle):
    """A background command: `await status()`, `await wait()`, `logs()`, `await kill()`."""

    async def status(self) -> ExecStatus:
        return await self._client.commands.get(self.id)

    async def wait(self, timeout: float | None = None, *, poll: float = 0.2) -> ExecStatus:
        async def until_done() -> ExecStatus:
            while (status := await self.status())["status"] == "running":
                await asyncio.sleep(poll)
            return status
        return await asyncio.wait_for(until_done(), timeout)

    @uses("exec.logs")
    async def logs(self, *, last_event_id: int | None = None) -> AsyncIterator[OutputChunk]:
        async for event in self._client._follow("exec.logs", path={"exec_id": self.id},
                                                last_event_id=last_event_id,
                                                done=lambda e: e.event == "exit"):
            chunk = _base.exec_item(event, self.exit)
            if chunk is not None:
                yield chunk

    async def kill(self) -> None:
        await self._client.commands.kill(self.id)


class AsyncPreviews(PreviewsAPI):
    _client: AsyncClient

    @uses("previews.logs")
    async def follow_logs(self, bucket: str, *, tail: int = 200) -> AsyncIterator[str]:
        async for event in self._client._follow("previews.logs", path={"bucket": bucket},
                                                params={"tail": tail},
                                                done=lambda e: e.event == "end"):
            line = _base.preview_line(event)
            if line is not None:
                yield line

    async def url(self, bucket: str) -> str:
        return (await self.get(bucket))["url"]


class AsyncWorkflows(WorkflowsAPI):
    _client: AsyncClient

    @uses("events")
    async def events(self, project_id: str, branch_id: str, *,
                     last_event_id: int | None = None) -> AsyncIterator[Event]:
        async for event in self._client._follow("events", last_event_id=last_event_id,
                                                params={"project_id": project_id,
                                                        "branch_id": branch_id}):
            yield Event.from_sse(event)


class AsyncRun(_base.RunHandle):
    """A workflow run: `await get()`, `events()`, `await wait()`."""

    async def get(self) -> dict:
        return await self._client.workflows.run(self.id)

    async def events(self, *, last_event_id: int = 0) -> AsyncIterator[Event]:
        keep, done = _base.run_filter(self.id)
        async for event in self._client._follow("events", last_event_id=last_event_id,
                                                done=done, params=self._params()):
            if keep(event):
                yield Event.from_sse(event)

    async def wait(self) -> dict:
        async for _ in self.events():
            pass
        return await self.get()
