"""What the sync and the async client share: configuration, building requests, the retry rule,
turning answers into values or typed errors, and reading the command/event streams."""

from __future__ import annotations

from typing import Any

import httpx

from weldr_sdk import errors
from weldr_sdk.api import Parse, json_body
from weldr_sdk.config import Config
from weldr_sdk.models import Event, ExitStatus, OutputChunk, ServerSentEvent
from weldr_sdk.operations import OPERATIONS, Operation

# Answers after which an idempotent call is sent again: the agent or a proxy in front of it
# was momentarily unable to answer (a restart, a deploy).
RETRY_STATUSES = {502, 503, 504}
SSE = {"Accept": "text/event-stream"}
FINISHED_RUN = {"run.completed", "run.failed"}


def make_config(config: Config | None, **given: Any) -> Config:
    return config or Config.load(**given)


class BaseClient:
    config: Config
    _http: httpx.Client | httpx.AsyncClient

    def _setup(self, http_class: type, *, config: Config | None, transport: Any,
               headers: dict[str, str] | None, namespaces: dict[str, type],
               **given: Any) -> None:
        """The configuration, the httpx client and the namespaces (`mounts`, `files`, …)."""
        self.config = make_config(config, **given)
        self._http = http_class(base_url=self.config.url, transport=transport,
                                headers={**self.config.headers(), **(headers or {})},
                                timeout=self.config.timeout)
        for name, namespace in namespaces.items():
            setattr(self, name, namespace(self))

    @property
    def timeout(self) -> float:
        return self.config.timeout

    @property
    def url(self) -> str:
        return self.config.url

    def _request(self, name: str, *, path: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None, json: Any = None, content: Any = None,
                 headers: dict[str, str] | None = None, timeout: Any = None,
                 ) -> tuple[Operation, httpx.Request]:
        op = OPERATIONS[name]
        request = self._http.build_request(
            op.method, op.url(**(path or {})), params=params, json=json, content=content,
            headers=headers, timeout=self.config.timeout if timeout is None else timeout)
        return op, request

    def _should_retry(self, op: Operation, attempt: int, *, response: httpx.Response | None = None,
                      error: Exception | None = None, retry: bool = True) -> bool:
        if not (retry and op.idempotent and attempt < self.config.retries):
            return False
        if error is not None:
            return isinstance(error, httpx.TransportError)
        return response is not None and response.status_code in RETRY_STATUSES

    def _delay(self, attempt: int) -> float:
        return self.config.backoff * (2 ** attempt)

    @staticmethod
    def _finish(response: httpx.Response, parse: Parse = json_body,
                ok: tuple[int, ...] = ()) -> Any:
        if response.is_error and response.status_code not in ok:
            raise errors.error_from_response(response)
        return parse(response)


class CommandHandle:
    """What a background command's handle holds: its id, and its exit once its logs end."""

    def __init__(self, client: Any, exec_id: str) -> None:
        self._client, self.id = client, exec_id
        self.exit = ExitStatus()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"


class RunHandle:
    """What a workflow run's handle holds."""

    def __init__(self, client: Any, run_id: str, project_id: str, branch_id: str) -> None:
        self._client, self.id = client, run_id
        self.project_id, self.branch_id = project_id, branch_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"

    def _params(self) -> dict[str, str]:
        return {"project_id": self.project_id, "branch_id": self.branch_id}


class StreamedExit:
    """A streamed command's end, once its output has been read."""

    def __init__(self, client: Any, body: dict) -> None:
        self._client, self._body, self.status = client, body, ExitStatus()

    @property
    def exit_code(self) -> int | None:
        return self.status.exit_code

    @property
    def timed_out(self) -> bool:
        return self.status.timed_out

    @property
    def duration_ms(self) -> int | None:
        return self.status.duration_ms


def transport_error(error: httpx.TransportError) -> errors.WeldrConnectionError:
    if isinstance(error, httpx.TimeoutException):
        return errors.WeldrTimeout(f"The agent did not answer in time: {error!r}")
    return errors.WeldrConnectionError(f"Could not talk to the agent: {error!r}")


def stream_timeout(config: Config) -> httpx.Timeout:
    """Streams wait for events as long as they come (the agent sends keep-alives)."""
    return httpx.Timeout(config.timeout, read=None)


def exec_item(event: ServerSentEvent, status: ExitStatus) -> OutputChunk | None:
    """One event of a command's stream: output to hand on, or `start`/`exit` noted in `status`."""
    if event.event in ("stdout", "stderr"):
        return OutputChunk.from_event(event)
    payload = event.json()
    if event.event == "start":
        status.pid = payload.get("pid")
    elif event.event == "exit":
        status.exit_code = payload.get("exit_code")
        status.timed_out = bool(payload.get("timed_out"))
        status.duration_ms = payload.get("duration_ms")
        status.extra = payload
    return None


def run_filter(run_id: str) -> tuple[Any, Any]:
    """(keep, done) predicates on a branch's events for one run. A branch runs one workflow at
    a time (409 `run_active`), so every event from the run's first (`run.queued`, carrying its
    id) to its last belongs to it, also those whose data names no run (`version.created`)."""
    seen = False

    def keep(event: ServerSentEvent) -> bool:
        nonlocal seen
        seen = seen or Event.from_sse(event).data.get("run_id") == run_id
        return seen

    def done(event: ServerSentEvent) -> bool:
        return event.event in FINISHED_RUN and Event.from_sse(event).data.get("run_id") == run_id
    return keep, done


def preview_line(event: ServerSentEvent) -> str | None:
    return event.json().get("line") if event.event == "log" else None
