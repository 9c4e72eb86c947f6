"""OpenAI through the official SDK: Chat Completions, streamed, with function tools.

Chat Completions rather than the Responses API because its wire format is the one every
OpenAI-compatible server speaks (what OPENAI_BASE_URL may point at: a proxy, vLLM, Ollama,
OpenRouter), and because its history is stateless: each request carries the whole
conversation, exactly what the neutral messages describe, with no server-side response ids to
keep alive between turns.

Tool calls stream as fragments keyed by `index`: the first carries the id and name, the rest
append to `function.arguments`; they are joined here and parsed when the stream ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
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
from .wire import api_key, arguments_json, tool_call

NAME = "openai"
STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "function_call": "tool_use",
                "length": "max_tokens"}


class OpenAIProvider:
    name = NAME

    def complete(self, *, model: str, system: str, messages: list[Message],
                 tools: list[ToolSpec], on_text: Callable[[str], None],
                 timeout: float) -> Turn:
        key = api_key(NAME, "OPENAI_API_KEY")
        request: dict[str, Any] = {
            "model": model,
            "messages": to_messages(system, messages),
            "max_completion_tokens": settings.LLM_MAX_OUTPUT_TOKENS,
            # Without this the stream carries no token counts at all.
            "stream_options": {"include_usage": True},
        }
        if tools:
            request["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in tools]
        return with_retries(lambda relay: self._attempt(key, timeout, request, relay),
                            provider=NAME, on_text=on_text, timeout=timeout)

    def _attempt(self, key: str, timeout: float, request: dict[str, Any],
                 on_text: Callable[[str], None]) -> Turn:
        # A client per call: base_url left unset makes the SDK read OPENAI_BASE_URL now.
        try:
            with openai.OpenAI(api_key=key, max_retries=0, timeout=timeout) as client:
                stream = client.chat.completions.create(**request, stream=True)
                return _read(stream, on_text)
        except openai.APIStatusError as error:
            raise status_error(NAME, error.status_code, _message(error),
                               error.response.headers) from error
        except openai.APIConnectionError as error:
            raise connection_failed(NAME, error) from error
        except openai.APIError as error:
            # An error object inside the stream: the server failed after answering 200.
            raise RetryableError(f"openai stream error: {error.message}", provider=NAME) from error
        except openai.OpenAIError as error:
            raise ProviderError(f"openai: {error}", provider=NAME) from error
        except httpx2.TransportError as error:
            raise connection_lost(NAME, error) from error


def _read(stream: Any, on_text: Callable[[str], None]) -> Turn:
    text: list[str] = []
    pending: dict[int, dict[str, Any]] = {}
    usage = Usage()
    finish = ""
    done = False
    for chunk in stream:
        done = True
        if chunk.usage is not None:
            usage = Usage(input_tokens=chunk.usage.prompt_tokens or 0,
                          output_tokens=chunk.usage.completion_tokens or 0)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if delta is not None and delta.content:
            text.append(delta.content)
            on_text(delta.content)
        for fragment in (delta.tool_calls if delta is not None else None) or []:
            call = pending.setdefault(fragment.index, {"id": "", "name": "", "args": []})
            if fragment.id:
                call["id"] = fragment.id
            if fragment.function is not None:
                if fragment.function.name:
                    call["name"] = fragment.function.name
                if fragment.function.arguments:
                    call["args"].append(fragment.function.arguments)
        if choice.finish_reason:
            finish = choice.finish_reason
    if not done or not finish:
        raise RetryableError("openai: the stream ended without a finish_reason", provider=NAME)
    calls: list[ToolCall] = [
        tool_call(c["id"] or f"call_{index}", c["name"], "".join(c["args"]))
        for index, c in sorted(pending.items())]
    stop = "tool_use" if calls else STOP_REASONS.get(finish, finish)
    return Turn(text="".join(text), tool_calls=calls, stop_reason=stop, usage=usage)


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return error.message


def to_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral history → Chat Completions `messages` (one `tool` message per result)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if isinstance(message, UserMessage):
            out.append({"role": "user", "content": message.text})
        elif isinstance(message, AssistantMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                entry["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": arguments_json(c)}} for c in message.tool_calls]
            out.append(entry)
        elif isinstance(message, ToolResultsMessage):
            for result in message.results:
                content = f"Error: {result.content}" if result.is_error else result.content
                out.append({"role": "tool", "tool_call_id": result.call_id, "content": content})
    return out
