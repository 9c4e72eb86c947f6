"""Small helpers every adapter needs to turn SDK output into the neutral types."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from .base import ProviderError, ToolCall, ToolResult


def api_key(provider: str, setting: str) -> str:
    """The key from settings, or a clear, final error naming the variable to set."""
    key = getattr(settings, setting, "")
    if not key:
        raise ProviderError(f"{setting} is not set: the {provider} provider needs an API key",
                            transient=False, provider=provider)
    return key


def tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    """A ToolCall from streamed argument text; arguments=None when it is not a JSON object."""
    # A tool without parameters streams no argument text at all: that is an empty object.
    if not raw.strip():
        return ToolCall(id=call_id, name=name, arguments={}, raw_arguments=raw)
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        return ToolCall(id=call_id, name=name, arguments=None, raw_arguments=raw)
    arguments = parsed if isinstance(parsed, dict) else None
    return ToolCall(id=call_id, name=name, arguments=arguments, raw_arguments=raw)


def result_payload(result: ToolResult) -> dict[str, Any]:
    """A tool result as a JSON object, for providers whose results are objects (Gemini)."""
    return {"error": result.content} if result.is_error else {"output": result.content}


def arguments_json(call: ToolCall) -> str:
    """The arguments to replay in history: what the model sent, even when it was not JSON."""
    if call.arguments is None:
        return call.raw_arguments
    return json.dumps(call.arguments)
