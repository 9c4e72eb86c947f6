"""Google Gemini through the official `google-genai` SDK: streamGenerateContent with functions.

Function calls arrive whole (name + args object) and may have no id; such calls get a stable
synthetic id (`synth-…`, derived from the conversation so far and the call's position, name and
arguments: the same turn gets the same ids, a later identical call a different one) that is
never sent back to the API. Gemini 3 also attaches a `thought_signature` to function-call parts
and rejects a history that drops it; the neutral ToolCall has no room for it, so signatures are
kept in a small in-process map keyed by call id and put back when the history is replayed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx2
from django.conf import settings
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .base import (
    AssistantMessage,
    Message,
    ProviderError,
    ToolCall,
    ToolResultsMessage,
    ToolSpec,
    Turn,
    Usage,
    UserMessage,
)
from .retry import RetryableError, connection_lost, status_error, with_retries
from .wire import api_key, result_payload

NAME = "google"
SYNTHETIC_PREFIX = "synth-"
STOP_REASONS = {"STOP": "end_turn", "MAX_TOKENS": "max_tokens"}
# A base URL may name the API version itself (".../v1beta"); the SDK would append another.
VERSIONED_URL = re.compile(r"^(?P<base>.*?)/(?P<version>v\d+(?:(?:alpha|beta)\d*)?)/?$")

_signatures: OrderedDict[str, bytes] = OrderedDict()
_signatures_lock = threading.Lock()
SIGNATURES_KEPT = 4096


class GeminiProvider:
    name = NAME

    def complete(self, *, model: str, system: str, messages: list[Message],
                 tools: list[ToolSpec], on_text: Callable[[str], None],
                 timeout: float) -> Turn:
        key = api_key(NAME, "GEMINI_API_KEY")
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            max_output_tokens=settings.LLM_MAX_OUTPUT_TOKENS,
            tools=[types.Tool(function_declarations=[
                types.FunctionDeclaration(name=t.name, description=t.description,
                                          parameters_json_schema=t.parameters)
                for t in tools])] if tools else None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        contents = to_contents(messages)
        salt = hashlib.sha256(repr(messages).encode()).hexdigest()[:16]
        return with_retries(
            lambda relay: self._attempt(key, timeout, model, contents, config, salt, relay),
            provider=NAME, on_text=on_text, timeout=timeout)

    def _attempt(self, key: str, timeout: float, model: str, contents: list[types.Content],
                 config: types.GenerateContentConfig, salt: str,
                 on_text: Callable[[str], None]) -> Turn:
        try:
            with genai.Client(api_key=key, vertexai=False,
                              http_options=http_options(timeout)) as client:
                stream = client.models.generate_content_stream(
                    model=model, contents=contents, config=config)
                return _read(stream, salt, on_text)
        except genai_errors.APIError as error:
            raise _api_error(error) from error
        except httpx2.TransportError as error:
            raise connection_lost(NAME, error, what="connection error") from error


def http_options(timeout: float) -> types.HttpOptions:
    """SDK retries off, the timeout in milliseconds, GOOGLE_GEMINI_BASE_URL honoured.

    The SDK reads GOOGLE_GEMINI_BASE_URL itself, but appends its default API version (now "v1")
    to it; a base URL that already ends in a version is split so that version is the one used.
    """
    options = types.HttpOptions(timeout=max(int(timeout * 1000), 1),
                                retry_options=types.HttpRetryOptions(attempts=1))
    base = os.environ.get("GOOGLE_GEMINI_BASE_URL", "").strip()
    match = VERSIONED_URL.match(base) if base else None
    if match:
        options.base_url = match["base"] + "/"
        options.api_version = match["version"]
    return options


def _read(stream: Any, salt: str, on_text: Callable[[str], None]) -> Turn:
    text: list[str] = []
    calls: list[ToolCall] = []
    usage = Usage()
    finish = ""
    for chunk in stream:
        if chunk.usage_metadata is not None:
            usage = Usage(input_tokens=chunk.usage_metadata.prompt_token_count or 0,
                          output_tokens=chunk.usage_metadata.candidates_token_count or 0)
        feedback = chunk.prompt_feedback
        if feedback is not None and feedback.block_reason:
            # The prompt itself was refused: asking again gets the same answer.
            raise ProviderError(f"google blocked the prompt ({feedback.block_reason}): "
                                f"{feedback.block_reason_message or ''}".rstrip(": "),
                                transient=False, provider=NAME)
        if not chunk.candidates:
            continue
        candidate = chunk.candidates[0]
        parts = candidate.content.parts if candidate.content is not None else None
        for part in parts or []:
            if part.function_call is not None:
                calls.append(_tool_call(part, len(calls), salt))
            elif part.text and not part.thought:
                text.append(part.text)
                on_text(part.text)
        if candidate.finish_reason is not None:
            finish = getattr(candidate.finish_reason, "value", str(candidate.finish_reason))
    if not finish:
        raise RetryableError("google: the stream ended without a finishReason", provider=NAME)
    stop = "tool_use" if calls else STOP_REASONS.get(finish, finish.lower())
    return Turn(text="".join(text), tool_calls=calls, stop_reason=stop, usage=usage)


def _tool_call(part: types.Part, position: int, salt: str) -> ToolCall:
    call = part.function_call
    assert call is not None
    arguments = dict(call.args or {})
    raw = json.dumps(arguments, sort_keys=True)
    call_id = call.id or _synthetic_id(salt, position, call.name or "", raw)
    if part.thought_signature:
        with _signatures_lock:
            _signatures[call_id] = part.thought_signature
            while len(_signatures) > SIGNATURES_KEPT:
                _signatures.popitem(last=False)
    return ToolCall(id=call_id, name=call.name or "", arguments=arguments, raw_arguments=raw)


def _synthetic_id(salt: str, position: int, name: str, raw: str) -> str:
    digest = hashlib.sha256(f"{salt}\0{position}\0{name}\0{raw}".encode()).hexdigest()[:16]
    return f"{SYNTHETIC_PREFIX}{position}-{digest}"


def _api_error(error: genai_errors.APIError) -> ProviderError:
    code = error.code or 0
    message = error.message or str(error)
    headers = error.response.headers if getattr(error, "response", None) is not None else None
    if code == 200 or not code:
        # An error object inside a 200 stream: the server failed after it started answering.
        return RetryableError(f"google stream error ({error.status}): {message}", provider=NAME)
    return status_error(NAME, code, message, headers)


def _wire_id(call_id: str) -> str | None:
    return None if call_id.startswith(SYNTHETIC_PREFIX) else call_id


def to_contents(messages: list[Message]) -> list[types.Content]:
    """Neutral history → `contents` (the model is role "model"; results are user turns)."""
    out: list[types.Content] = []
    for message in messages:
        if isinstance(message, UserMessage):
            out.append(types.Content(role="user", parts=[types.Part(text=message.text)]))
        elif isinstance(message, AssistantMessage):
            parts = [types.Part(text=message.text)] if message.text else []
            for call in message.tool_calls:
                with _signatures_lock:
                    signature = _signatures.get(call.id)
                parts.append(types.Part(
                    function_call=types.FunctionCall(id=_wire_id(call.id), name=call.name,
                                                     args=call.arguments or {}),
                    thought_signature=signature))
            if parts:
                out.append(types.Content(role="model", parts=parts))
        elif isinstance(message, ToolResultsMessage):
            out.append(types.Content(role="user", parts=[
                types.Part(function_response=types.FunctionResponse(
                    id=_wire_id(r.call_id), name=r.name, response=result_payload(r)))
                for r in message.results]))
    return out
