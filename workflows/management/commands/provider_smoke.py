"""Manual smoke test of one provider adapter against the real service (docs/providers.md)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workflows.providers.base import (
    AssistantMessage,
    Message,
    ProviderError,
    ToolResult,
    ToolResultsMessage,
    ToolSpec,
    UnknownModel,
    UserMessage,
)
from workflows.providers.registry import get_provider

ADD = ToolSpec("add", "Add two integers and return the sum.", {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"]})
PROMPT = ("Say one short sentence about yourself, then call the add tool with a=20 and b=22, "
          "then state the result.")


class Command(BaseCommand):
    help = "Stream a turn, a tool call and its result through one provider (needs its API key)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", default="", help="provider/model; default DEFAULT_MODEL")
        parser.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args: Any, model: str, timeout: float, **options: Any) -> None:
        try:
            adapter, name = get_provider(model)
        except UnknownModel as error:
            raise CommandError(str(error)) from error
        history: list[Message] = [UserMessage(PROMPT)]
        try:
            for _ in range(4):
                turn = adapter.complete(model=name, system="You are terse.", messages=history,
                                        tools=[ADD], on_text=self._print, timeout=timeout)
                self.stdout.write(f"\n[{turn.stop_reason}; {turn.usage.input_tokens} in, "
                                  f"{turn.usage.output_tokens} out]")
                history.append(AssistantMessage(turn.text, turn.tool_calls))
                if not turn.tool_calls:
                    return
                results = []
                for call in turn.tool_calls:
                    self.stdout.write(f"tool call {call.id} {call.name}({call.raw_arguments})")
                    args_ = call.arguments or {}
                    total = int(args_.get("a", 0)) + int(args_.get("b", 0))
                    results.append(ToolResult(call.id, call.name, str(total)))
                history.append(ToolResultsMessage(results))
        except ProviderError as error:
            raise CommandError(f"{error} (transient={error.transient})") from error

    def _print(self, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()
