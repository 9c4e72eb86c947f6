"""The one interface every LLM provider adapter implements.

The workflow engine speaks only these types; each adapter (anthropic.py, openai.py, gemini.py)
translates them to its SDK and back, streaming text deltas through `on_text` as they arrive.

History is a list of neutral messages:
    UserMessage(text)                      the user's request (or a follow-up instruction)
    AssistantMessage(text, tool_calls)     what the model said and the tools it called
    ToolResultsMessage(results)            the results of those calls, in order
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    # None when the model's arguments were not valid JSON; raw_arguments keeps what it sent,
    # so the engine can answer with an error result and let the model correct itself.
    arguments: dict[str, Any] | None
    raw_arguments: str = ""


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class UserMessage:
    text: str


@dataclass(frozen=True)
class AssistantMessage:
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ToolResultsMessage:
    results: list[ToolResult]


Message = UserMessage | AssistantMessage | ToolResultsMessage


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Turn:
    """One model response: its text, the tools it called, and why it stopped."""

    text: str
    tool_calls: list[ToolCall]
    stop_reason: str  # "end_turn" | "tool_use" | "max_tokens" | provider-specific
    usage: Usage = Usage()


class ProviderError(Exception):
    """A provider call failed. `transient` errors (rate limits, 5xx, timeouts) may be retried."""

    def __init__(self, message: str, *, transient: bool = False, provider: str = "") -> None:
        super().__init__(message)
        self.transient = transient
        self.provider = provider


class UnknownModel(ValueError):
    """The model string names no known provider (expected "anthropic/…", "openai/…", "google/…")."""


class Provider(Protocol):
    name: str  # "anthropic" | "openai" | "google"

    def complete(
        self,
        *,
        model: str,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: Callable[[str], None],
        timeout: float,
    ) -> Turn:
        """Stream one turn; call on_text(delta) for each text fragment; raise ProviderError."""
        ...
