"""Anthropic (Claude) through the official SDK: the Messages API, streamed, with tool use.

Text arrives as `text_delta`s; a tool call as a `tool_use` block whose input is streamed as
`input_json_delta.partial_json` fragments, joined here and parsed at `content_block_stop`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
from django.conf import settings

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
from .retry import RetryableError, connection_failed, connection_lost, status_error, with_retries
from .wire import api_key, tool_call

NAME = "anthropic"
# Error types the API sends in a mid-stream `event: error` frame that are worth a retry.
TRANSIENT_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error",
                             "timeout_error"})


class AnthropicProvider:
    name = NAME

    def complete(self, *, model: str, system: str, messages: list[Message],
                 tools: list[ToolSpec], on_text: Callable[[str], None],
                 timeout: float) -> Turn:
        key = api_key(NAME, "ANTHROPIC_API_KEY")
        request: dict[str, Any] = {
            "model": model,
            "max_tokens": settings.LLM_MAX_OUTPUT_TOKENS,
            "messages": to_messages(messages),
        }
        if tools:
            request["tools"] = [{"name": t.name, "description": t.description,
                                 "input_schema": t.parameters} for t in tools]
        if system:
            request["system"] = system
        return with_retries(lambda relay: self._attempt(key, timeout, request, relay),
                            provider=NAME, on_text=on_text, timeout=timeout)

    def _attempt(self, key: str, timeout: float, request: dict[str, Any],
                 on_text: Callable[[str], None]) -> Turn:
        # A client per call: base_url=None makes the SDK read ANTHROPIC_BASE_URL now, not at
        # import, and retries are ours (retry.py).
        try:
            with anthropic.Anthropic(api_key=key, max_retries=0, timeout=timeout) as client:
                stream = client.messages.create(**request, stream=True)
                return _read(stream, on_text)
        except anthropic.APIStatusError as error:
            raise _status_error(error) from error
        except anthropic.APIConnectionError as error:
            raise connection_failed(NAME, error) from error
        except anthropic.APIError as error:
            raise ProviderError(f"anthropic: {error.message}", provider=NAME) from error
        except httpx2.TransportError as error:
            raise connection_lost(NAME, error) from error


def _read(stream: Any, on_text: Callable[[str], None]) -> Turn:
    text: list[str] = []
    blocks: dict[int, dict[str, Any]] = {}
    calls: list[ToolCall] = []
    usage = {"input": 0, "output": 0}
    stop_reason = ""
    for event in stream:
        kind = event.type
        if kind == "message_start":
            usage["input"] = event.message.usage.input_tokens or 0
            usage["output"] = event.message.usage.output_tokens or 0
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            blocks[event.index] = {"id": block.id, "name": block.name, "json": []}
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                text.append(delta.text)
                on_text(delta.text)
            elif delta.type == "input_json_delta" and event.index in blocks:
                blocks[event.index]["json"].append(delta.partial_json)
        elif kind == "content_block_stop" and event.index in blocks:
            block = blocks.pop(event.index)
            calls.append(tool_call(block["id"], block["name"], "".join(block["json"])))
        elif kind == "message_delta":
            stop_reason = event.delta.stop_reason or stop_reason
            usage["output"] = event.usage.output_tokens or usage["output"]
            if event.usage.input_tokens:
                usage["input"] = event.usage.input_tokens
    if not stop_reason:
        raise RetryableError("anthropic: the stream ended before message_delta", provider=NAME)
    return Turn(text="".join(text), tool_calls=calls, stop_reason=stop_reason,
                usage=Usage(input_tokens=usage["input"], output_tokens=usage["output"]))


def _status_error(error: anthropic.APIStatusError) -> ProviderError:
    message = error.api_message or error.message
    # A mid-stream `event: error` arrives on a 200 response; its type says what happened.
    if error.status_code == 200:
        transient = error.type in TRANSIENT_TYPES
        text = f"anthropic stream error ({error.type}): {message}"
        if transient:
            return RetryableError(text, provider=NAME)
        return ProviderError(text, transient=False, provider=NAME)
    return status_error(NAME, error.status_code, message, error.response.headers)


def to_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral history → Messages API `messages` (tool results are user turns)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, UserMessage):
            out.append({"role": "user", "content": [{"type": "text", "text": message.text}]})
        elif isinstance(message, AssistantMessage):
            content: list[dict[str, Any]] = []
            if message.text:
                content.append({"type": "text", "text": message.text})
            for call in message.tool_calls:
                # The API wants an object here; invalid arguments were answered with an error.
                content.append({"type": "tool_use", "id": call.id, "name": call.name,
                                "input": call.arguments if call.arguments is not None else {}})
            if content:
                out.append({"role": "assistant", "content": content})
        elif isinstance(message, ToolResultsMessage):
            out.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content,
                 "is_error": r.is_error} for r in message.results]})
    return out
