"""A scripted in-process Provider: a test double of the provider interface for engine tests.

The end-to-end tests through the real SDKs and wire formats are test_providers*.py (with
llm_server.py); these tests exercise the engine, tools and events with a model whose turns are
written down. Plugged in with WORKFLOW_EXTRA_PROVIDERS="scripted=tests.workflows.scripted.
ScriptedProvider"; the model "scripted/NAME" plays $WELDR_SCRIPTED_DIR/NAME.json:

    {"turns": [{"text": "...", "tool_calls": [{"name": "...", "arguments": {...}}
                                              | {"name": "...", "raw_arguments": "{oops"}],
                "error": {"message": "...", "transient": false},   # after streaming the text
                "fail_first": 2,          # raise a transient error on the first 2 attempts
                "wait_for": "/path",      # block until this file exists
                "sleep": 1.5}]}

Every request it receives is appended to NAME.requests.jsonl, so a test can check what the
model was told (tool results, errors).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from workflows.providers.base import (
    Message,
    ProviderError,
    ToolCall,
    ToolSpec,
    Turn,
    Usage,
)

CHUNK = 8


class ScriptedProvider:
    name = "scripted"

    def __init__(self) -> None:
        self.turn = 0
        self.attempts: dict[int, int] = {}

    def _script(self, model: str) -> tuple[list[dict[str, Any]], Path]:
        directory = Path(os.environ["WELDR_SCRIPTED_DIR"])
        return json.loads((directory / f"{model}.json").read_text())["turns"], directory

    def complete(self, *, model: str, system: str, messages: list[Message],
                 tools: list[ToolSpec], on_text: Callable[[str], None], timeout: float) -> Turn:
        turns, directory = self._script(model)
        with open(directory / f"{model}.requests.jsonl", "a") as log:
            log.write(json.dumps({"turn": self.turn, "tools": [t.name for t in tools],
                                  "messages": [_plain(m) for m in messages]}) + "\n")
        if self.turn >= len(turns):
            return Turn(text="", tool_calls=[], stop_reason="end_turn")
        spec = turns[self.turn]
        attempt = self.attempts[self.turn] = self.attempts.get(self.turn, 0) + 1
        if attempt <= spec.get("fail_first", 0):
            raise ProviderError("429 rate limited (scripted)", transient=True, provider="scripted")
        if "wait_for" in spec:
            deadline = time.monotonic() + timeout
            while not Path(spec["wait_for"]).exists():
                if time.monotonic() > deadline:
                    raise ProviderError("timed out (scripted)", transient=True)
                time.sleep(0.05)
        time.sleep(spec.get("sleep", 0))
        text = spec.get("text", "")
        for start in range(0, len(text), CHUNK):
            on_text(text[start:start + CHUNK])
        if "error" in spec:
            raise ProviderError(spec["error"]["message"],
                                transient=spec["error"].get("transient", False),
                                provider="scripted")
        calls = [ToolCall(id=c.get("id", f"call_{self.turn}_{i}"), name=c["name"],
                          arguments=c.get("arguments") if "raw_arguments" not in c else None,
                          raw_arguments=c.get("raw_arguments", json.dumps(c.get("arguments"))))
                 for i, c in enumerate(spec.get("tool_calls", []))]
        self.turn += 1
        return Turn(text=text, tool_calls=calls, stop_reason="tool_use" if calls else "end_turn",
                    usage=Usage(input_tokens=100, output_tokens=len(text)))


def _plain(message: Message) -> dict[str, Any]:
    return {"kind": type(message).__name__, **asdict(message)}
