"""A local HTTP server that speaks the LLM providers' real streaming wire formats.

The official SDKs are pointed at it by base URL, so what the tests exercise is the real client
code parsing real bytes: Anthropic Messages SSE (`event:` + `data:` frames), OpenAI Chat
Completions chunks (`data:` lines ending in `[DONE]`), and Gemini `streamGenerateContent?alt=sse`
(under both /v1/ and /v1beta/).

Scripting: each provider has a queue; every request takes the next item.

    server.script("anthropic", [
        Reply(text=["Let me ", "look."], calls=[Call("read_file", {"path": "a.txt"})]),
        Fail(429, retry_after="0"),
        Reply(text="Done."),
    ])

`Reply` is one streamed model turn (text chunks, tool calls whose JSON arguments are split into
`fragments`, stop reason, usage) and may break mid-stream (`fail_after` content deltas, then an
error frame or a dropped connection); `Fail` is an HTTP error answer in the provider's format.
Every request is recorded (`server.requests`) so a test can check what the SDK sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROVIDERS = ("anthropic", "openai", "google")
ALIASES = {"gemini": "google"}


@dataclass
class Call:
    """A tool call the scripted model makes. A str `arguments` is sent verbatim (bad JSON ok)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None  # None: the server makes one (Gemini: the call has no id at all)
    fragments: int = 3  # how many pieces the argument JSON is streamed in (Gemini: always 1)
    thought_signature: str | None = None  # Gemini only: base64 the model attaches to the part

    def raw(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """One streamed model turn."""

    text: list[str] | str = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    stop: str | None = None  # provider-native; None: derived (tool use or a normal end)
    usage: tuple[int, int] = (12, 7)  # input, output tokens
    # Break the stream after this many content deltas (text chunks + argument fragments).
    fail_after: int | None = None
    # "error": the provider's in-stream error (Anthropic `event: error`, a `data: {"error"}`
    # object for the others); "drop": the connection closes mid-body. None: error for
    # Anthropic, drop for OpenAI and Gemini.
    fault: str | None = None
    pause: float = 0.0  # seconds between frames, for tests that watch a run in progress
    gate: threading.Event | None = None  # when set, the answer waits for this event
    # Send these SSE frames verbatim instead (each a complete "event:/data:" block), for
    # answers the fields above cannot describe.
    frames: list[str] | None = None

    def chunks(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


@dataclass
class Fail:
    """An HTTP error answer, in the provider's error format."""

    status: int
    message: str = "scripted failure"
    retry_after: str | None = None  # the Retry-After header, verbatim


@dataclass
class Recorded:
    provider: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]


class _Broken(Exception):
    """Raised inside a stream writer to cut the stream (after an error frame, or not)."""


def _split(raw: str, pieces: int) -> list[str]:
    pieces = max(1, min(pieces, len(raw) or 1))
    size = -(-len(raw) // pieces) if raw else 1
    return [raw[i:i + size] for i in range(0, len(raw), size)] or [""]


# Retries back off in milliseconds against this server (conftest_llm sets them for the test
# process; a module's own agent gets them in its environment).
FAST_RETRY = {"LLM_RETRY_BASE_SECONDS": "0.01", "LLM_RETRY_MAX_SECONDS": "5"}


class LLMServer:
    """The server, its scripts and its request log. start()/stop() or use as a context."""

    def __init__(self) -> None:
        self._scripts: dict[str, deque[Reply | Fail]] = {p: deque() for p in PROVIDERS}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._ids = 0
        self.requests: list[Recorded] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------

    def script(self, provider: str, items: list[Reply | Fail]) -> None:
        """Queue answers for `provider` ("anthropic", "openai", "google"/"gemini")."""
        name = self._name(provider)
        for item in items:
            for call in item.calls if isinstance(item, Reply) else []:
                if name == "google" and not isinstance(_json_object(call.raw()), dict):
                    raise ValueError("Gemini sends arguments as a JSON object; "
                                     f"{call.raw()!r} cannot be scripted")
        with self._lock:
            self._scripts[name].extend(items)

    def reset(self) -> None:
        """Forget every script and recorded request: one server shared by a module's tests
        starts each test as a fresh one would (a failed test may leave answers queued)."""
        with self._lock:
            for queue in self._scripts.values():
                queue.clear()
            self.requests.clear()

    def remaining(self, provider: str) -> int:
        with self._lock:
            return len(self._scripts[self._name(provider)])

    def requests_for(self, provider: str) -> list[Recorded]:
        name = self._name(provider)
        with self._lock:
            return [r for r in self.requests if r.provider == name]

    def wait_for_requests(self, provider: str, count: int, timeout: float = 60) -> list[Recorded]:
        """Block until `count` requests for `provider` arrived (for tests of a run in progress)."""
        deadline = time.monotonic() + timeout
        name = self._name(provider)
        with self._arrived:
            while sum(r.provider == name for r in self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} {name} request(s) did not arrive in {timeout}s")
                self._arrived.wait(left)
            return [r for r in self.requests if r.provider == name]

    @staticmethod
    def _name(provider: str) -> str:
        name = ALIASES.get(provider, provider)
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}")
        return name

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LLMServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Environment that points the three SDKs (and the agent's settings) at this server."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "GOOGLE_GEMINI_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "test-anthropic-key",
            "OPENAI_API_KEY": "test-openai-key",
            "GEMINI_API_KEY": "test-gemini-key",
        }

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, item: Recorded) -> Reply | Fail | None:
        with self._arrived:
            self.requests.append(item)
            self._arrived.notify_all()
            queue = self._scripts[item.provider]
            return queue.popleft() if queue else None

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}{self._ids:04d}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: LLMServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the request log is self.server_state.requests

    def do_POST(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        provider, model = _route(split.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if provider is None:
            self._json(404, {"error": {"message": f"no such endpoint: {split.path}"}})
            return
        body = json.loads(raw or b"{}")
        item = self.server_state._record(Recorded(
            provider=provider, path=split.path, query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()}, body=body))
        if item is None:
            # Not transient in any SDK's eyes, so an exhausted script fails fast, not in retries.
            item = Fail(400, f"llm_server: no scripted reply left for {provider}")
        if isinstance(item, Fail):
            self._fail(provider, item)
            return
        if item.gate is not None:
            item.gate.wait(timeout=120)
        writer = {"anthropic": _anthropic, "openai": _openai, "google": _gemini}[provider]
        frames = iter(item.frames) if item.frames is not None else \
            writer(self.server_state, item, model or body.get("model", ""))
        self._stream(frames, item)

    # -- responses ---------------------------------------------------------------------------

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _fail(self, provider: str, fail: Fail) -> None:
        headers = {"Retry-After": fail.retry_after} if fail.retry_after is not None else {}
        self._json(fail.status, _error_body(provider, fail.status, fail.message), headers)

    def _stream(self, frames: Iterator[str], reply: Reply) -> None:
        # Chunked encoding, so a connection closed mid-body is an error the client can see
        # (a close-delimited body would just look finished).
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for frame in frames:
                data = frame.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if reply.pause:
                    time.sleep(reply.pause)
        except _Broken as broken:
            if broken.args and broken.args[0] == "drop":
                self.wfile.flush()
                return  # no terminating chunk: the client sees an incomplete body
        except (BrokenPipeError, ConnectionResetError):
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _json_object(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _route(path: str) -> tuple[str | None, str | None]:
    if path.endswith("/messages"):
        return "anthropic", None
    if path.endswith("/chat/completions"):
        return "openai", None
    # /v1/models/gemini-x:streamGenerateContent or /v1beta/models/...
    parts = path.strip("/").split("/")
    if len(parts) == 3 and parts[0] in ("v1", "v1beta") and parts[1] == "models" \
            and parts[2].endswith(":streamGenerateContent"):
        return "google", parts[2].split(":", 1)[0]
    return None, None


ANTHROPIC_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                         403: "permission_error", 404: "not_found_error",
                         429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                   503: "UNAVAILABLE"}


def _error_body(provider: str, status: int, message: str) -> dict[str, Any]:
    if provider == "anthropic":
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if provider == "openai":
        kind = "rate_limit_exceeded" if status == 429 else (
            "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return {"error": {"code": status, "message": message,
                      "status": GOOGLE_STATUSES.get(status, HTTPStatus(status).phrase.upper())}}


class _Budget:
    """Counts content deltas and breaks the stream when the reply's fail_after is reached."""

    def __init__(self, reply: Reply, default_fault: str) -> None:
        self.left = reply.fail_after
        self.fault = reply.fault or default_fault

    def due(self) -> bool:
        """The stream must break now (checked between deltas)."""
        return self.left is not None and self.left <= 0

    def spent(self) -> bool:
        """Before a delta: break now, or count the delta about to be sent."""
        if self.due():
            return True
        if self.left is not None:
            self.left -= 1
        return False


def _sse(event: str | None, payload: Any) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def _anthropic(state: LLMServer, reply: Reply, model: str) -> Iterator[str]:
    budget = _Budget(reply, "error")

    def breaking() -> Iterator[str]:
        if budget.fault == "error":
            yield _sse("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded (scripted)"}})
        raise _Broken(budget.fault)

    stop = reply.stop or ("tool_use" if reply.calls else "end_turn")
    yield _sse("message_start", {"type": "message_start", "message": {
        "id": state._next_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": reply.usage[0], "output_tokens": 1}}})
    yield _sse("ping", {"type": "ping"})
    index = 0
    if budget.due():
        yield from breaking()
    if reply.chunks():
        yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": {"type": "text", "text": ""}})
        for chunk in reply.chunks():
            if budget.spent():
                yield from breaking()
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "text_delta", "text": chunk}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    for call in reply.calls:
        yield _sse("content_block_start", {"type": "content_block_start", "index": index,
                                           "content_block": {
                                               "type": "tool_use", "name": call.name, "input": {},
                                               "id": call.id or state._next_id("toolu_")}})
        for piece in _split(call.raw(), call.fragments):
            if budget.spent():
                yield from breaking()
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": piece}})
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    if budget.due():
        yield from breaking()
    yield _sse("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop, "stop_sequence": None},
                                 "usage": {"output_tokens": reply.usage[1]}})
    yield _sse("message_stop", {"type": "message_stop"})


def _openai(state: LLMServer, reply: Reply, model: str) -> Iterator[str]:
    budget = _Budget(reply, "drop")
    ident, created = state._next_id("chatcmpl-"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _sse(None, {"id": ident, "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [
                               {"index": 0, "delta": delta, "finish_reason": finish}]})

    def breaking() -> Iterator[str]:
        if budget.fault == "error":
            yield _sse(None, {"error": {"message": "The server had an error (scripted)",
                                        "type": "server_error", "param": None, "code": None}})
        raise _Broken(budget.fault)

    yield chunk({"role": "assistant", "content": ""})
    if budget.due():
        yield from breaking()
    for text in reply.chunks():
        if budget.spent():
            yield from breaking()
        yield chunk({"content": text})
    for number, call in enumerate(reply.calls):
        yield chunk({"tool_calls": [{"index": number, "id": call.id or state._next_id("call_"),
                                     "type": "function",
                                     "function": {"name": call.name, "arguments": ""}}]})
        for piece in _split(call.raw(), call.fragments):
            if budget.spent():
                yield from breaking()
            yield chunk({"tool_calls": [{"index": number, "function": {"arguments": piece}}]})
    if budget.due():
        yield from breaking()
    yield chunk({}, reply.stop or ("tool_calls" if reply.calls else "stop"))
    input_tokens, output_tokens = reply.usage
    yield _sse(None, {"id": ident, "object": "chat.completion.chunk", "created": created,
                      "model": model, "choices": [], "usage": {
                          "prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                          "total_tokens": input_tokens + output_tokens}})
    yield _sse(None, "[DONE]")


def _gemini(state: LLMServer, reply: Reply, model: str) -> Iterator[str]:
    budget = _Budget(reply, "drop")

    def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> str:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": model}
        if finish:
            candidate["finishReason"] = finish
            input_tokens, output_tokens = reply.usage
            payload["usageMetadata"] = {"promptTokenCount": input_tokens,
                                        "candidatesTokenCount": output_tokens,
                                        "totalTokenCount": input_tokens + output_tokens}
        return _sse(None, payload)

    def breaking() -> Iterator[str]:
        if budget.fault == "error":
            yield _sse(None, {"error": {"code": 503, "message": "Overloaded (scripted)",
                                        "status": "UNAVAILABLE"}})
        raise _Broken(budget.fault)

    if budget.due():
        yield from breaking()
    for text in reply.chunks():
        if budget.spent():
            yield from breaking()
        yield chunk([{"text": text}])
    for call in reply.calls:
        if budget.spent():
            yield from breaking()
        # Calls arrive whole: Gemini does not stream function arguments.
        function_call: dict[str, Any] = {"name": call.name, "args": json.loads(call.raw())}
        if call.id:
            function_call["id"] = call.id
        part: dict[str, Any] = {"functionCall": function_call}
        if call.thought_signature:
            part["thoughtSignature"] = call.thought_signature
        yield chunk([part])
    if budget.due():
        yield from breaking()
    yield chunk([], reply.stop or "STOP")
