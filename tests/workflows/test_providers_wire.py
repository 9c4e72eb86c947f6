"""What each SDK actually sent: history, tool results, tools and system prompt, per provider."""

from __future__ import annotations

from typing import Any

from tests.workflows.llm_server import Call, LLMServer, Reply
from tests.workflows.test_providers import MODELS, TOOLS
from workflows.providers.base import (
    AssistantMessage,
    Message,
    ToolResult,
    ToolResultsMessage,
    Turn,
    UserMessage,
)
from workflows.providers.registry import get_provider

pytest_plugins = ["tests.workflows.conftest_llm"]


def two_turns(server: LLMServer, provider: str, first: Reply) -> tuple[Turn, dict[str, Any]]:
    """Run a tool-calling turn, answer its calls, run the next; return the second request."""
    server.script(provider, [first, Reply(text="All done.")])
    adapter, model = get_provider(MODELS[provider])
    history: list[Message] = [UserMessage("Make an app.")]
    turn = adapter.complete(model=model, system="You write code.", messages=history,
                            tools=TOOLS, on_text=lambda _: None, timeout=30)
    history.append(AssistantMessage(turn.text, turn.tool_calls))
    history.append(ToolResultsMessage([
        ToolResult(call.id, call.name, f"wrote {index}", is_error=index == 1)
        for index, call in enumerate(turn.tool_calls)]))
    final = adapter.complete(model=model, system="You write code.", messages=history,
                             tools=TOOLS, on_text=lambda _: None, timeout=30)
    assert final.text == "All done."
    return turn, server.requests_for(provider)[-1].body


CALLS = [Call("write_file", {"path": "a.txt", "content": "A"}, id="id-a"),
         Call("write_file", {"path": "b.txt", "content": "B"}, id="id-b")]


def test_anthropic_history_and_tool_results(llm_server: LLMServer) -> None:
    turn, body = two_turns(llm_server, "anthropic", Reply(text="Writing two.", calls=CALLS))

    assert [c.id for c in turn.tool_calls] == ["id-a", "id-b"]
    assert body["model"] == "claude-test" and body["stream"] is True
    assert body["system"] == "You write code."
    assert body["max_tokens"] > 0
    assert body["tools"] == [{"name": "write_file", "description": TOOLS[0].description,
                              "input_schema": TOOLS[0].parameters}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Make an app."}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Writing two."},
            {"type": "tool_use", "id": "id-a", "name": "write_file",
             "input": {"path": "a.txt", "content": "A"}},
            {"type": "tool_use", "id": "id-b", "name": "write_file",
             "input": {"path": "b.txt", "content": "B"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "id-a", "content": "wrote 0",
             "is_error": False},
            {"type": "tool_result", "tool_use_id": "id-b", "content": "wrote 1",
             "is_error": True}]},
    ]


def test_anthropic_replays_invalid_arguments_as_an_empty_object(llm_server: LLMServer) -> None:
    _, body = two_turns(llm_server, "anthropic", Reply(calls=[Call("write_file", "{oops")]))

    tool_use = body["messages"][1]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["input"] == {}


def test_openai_history_and_tool_results(llm_server: LLMServer) -> None:
    turn, body = two_turns(llm_server, "openai", Reply(text="Writing two.", calls=CALLS))

    assert [c.id for c in turn.tool_calls] == ["id-a", "id-b"]
    assert body["model"] == "gpt-test" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [{"type": "function", "function": {
        "name": "write_file", "description": TOOLS[0].description,
        "parameters": TOOLS[0].parameters}}]
    assert body["messages"] == [
        {"role": "system", "content": "You write code."},
        {"role": "user", "content": "Make an app."},
        {"role": "assistant", "content": "Writing two.", "tool_calls": [
            {"id": "id-a", "type": "function", "function": {
                "name": "write_file", "arguments": '{"path": "a.txt", "content": "A"}'}},
            {"id": "id-b", "type": "function", "function": {
                "name": "write_file", "arguments": '{"path": "b.txt", "content": "B"}'}}]},
        {"role": "tool", "tool_call_id": "id-a", "content": "wrote 0"},
        {"role": "tool", "tool_call_id": "id-b", "content": "Error: wrote 1"},
    ]


def test_openai_replays_invalid_arguments_verbatim(llm_server: LLMServer) -> None:
    _, body = two_turns(llm_server, "openai", Reply(calls=[Call("write_file", "{oops")]))

    assistant = body["messages"][2]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{oops"


def test_gemini_history_and_function_responses(llm_server: LLMServer) -> None:
    turn, body = two_turns(llm_server, "google", Reply(text="Writing two.", calls=CALLS))

    assert [c.id for c in turn.tool_calls] == ["id-a", "id-b"]
    assert body["systemInstruction"]["parts"] == [{"text": "You write code."}]
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "write_file"
    # google-genai writes this one field in snake case; the API's JSON parser takes both.
    schema = declaration.get("parametersJsonSchema", declaration.get("parameters_json_schema"))
    assert schema == TOOLS[0].parameters
    assert body["generationConfig"]["maxOutputTokens"] > 0
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Make an app."}]},
        {"role": "model", "parts": [
            {"text": "Writing two."},
            {"functionCall": {"id": "id-a", "name": "write_file",
                              "args": {"path": "a.txt", "content": "A"}}},
            {"functionCall": {"id": "id-b", "name": "write_file",
                              "args": {"path": "b.txt", "content": "B"}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "id-a", "name": "write_file",
                                  "response": {"output": "wrote 0"}}},
            {"functionResponse": {"id": "id-b", "name": "write_file",
                                  "response": {"error": "wrote 1"}}}]},
    ]


def test_gemini_calls_without_ids_get_stable_ids_that_are_not_sent(llm_server: LLMServer) -> None:
    calls = [Call("write_file", {"path": "a.txt", "content": "A"}),
             Call("write_file", {"path": "a.txt", "content": "A"})]
    llm_server.script("google", [Reply(calls=calls), Reply(calls=calls)])
    adapter, model = get_provider(MODELS["google"])
    again, elsewhere = (
        adapter.complete(model=model, system="", messages=[UserMessage(text)], tools=TOOLS,
                         on_text=lambda _: None, timeout=30)
        for text in ("Make an app.", "Something else."))

    turn, body = two_turns(llm_server, "google", Reply(calls=calls))

    # Identical calls in one turn still differ; the same turn again gets the same ids; the
    # same calls after another history get other ids.
    assert len({c.id for c in turn.tool_calls}) == 2
    assert [c.id for c in turn.tool_calls] == [c.id for c in again.tool_calls]
    assert not {c.id for c in turn.tool_calls} & {c.id for c in elsewhere.tool_calls}
    model_parts = body["contents"][1]["parts"]
    result_parts = body["contents"][2]["parts"]
    assert all("id" not in p["functionCall"] for p in model_parts)
    assert all("id" not in p["functionResponse"] for p in result_parts)


def test_gemini_thought_signatures_are_sent_back(llm_server: LLMServer) -> None:
    signature = "c2lnbmF0dXJlLWJ5dGVz"  # base64 of "signature-bytes"
    call = Call("write_file", {"path": "a", "content": "b"}, id="sig-call",
                thought_signature=signature)

    _, body = two_turns(llm_server, "google", Reply(calls=[call]))

    part = body["contents"][1]["parts"][0]
    assert part["functionCall"]["id"] == "sig-call"
    assert part["thoughtSignature"] == signature
