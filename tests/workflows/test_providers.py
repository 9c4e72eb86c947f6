"""Every adapter, through its real SDK, against the provider-protocol server (llm_server.py)."""

from __future__ import annotations

import logging

import pytest

from tests.workflows.llm_server import Call, Fail, LLMServer, Reply
from workflows.providers.base import (
    ProviderError,
    ToolSpec,
    Turn,
    UnknownModel,
    UserMessage,
)
from workflows.providers.registry import get_provider

MODELS = {"anthropic": "anthropic/claude-test", "openai": "openai/gpt-test",
          "google": "google/gemini-test"}
ALL = pytest.mark.parametrize("provider", list(MODELS))
# Gemini sends function arguments as a JSON object, so it cannot send invalid JSON.
STREAMED_ARGUMENTS = pytest.mark.parametrize("provider", ["anthropic", "openai"])
TOOLS = [ToolSpec("write_file", "Write a file in the workspace.", {
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["path", "content"]})]

pytest_plugins = ["tests.workflows.conftest_llm"]


def complete(provider: str, messages: list | None = None) -> tuple[Turn, list[str]]:
    adapter, model = get_provider(MODELS[provider])
    deltas: list[str] = []
    turn = adapter.complete(model=model, system="You write code.",
                            messages=messages or [UserMessage("Make an app.")], tools=TOOLS,
                            on_text=deltas.append, timeout=30)
    return turn, deltas


@ALL
def test_text_deltas_arrive_in_order_with_usage(llm_server: LLMServer, provider: str) -> None:
    # given
    llm_server.script(provider, [Reply(text=["I'll ", "build ", "it", "."], usage=(321, 45))])
    # when
    turn, deltas = complete(provider)
    # then
    assert deltas == ["I'll ", "build ", "it", "."]
    assert turn.text == "I'll build it."
    assert turn.tool_calls == []
    assert turn.stop_reason == "end_turn"
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (321, 45)


@ALL
def test_tool_call_with_fragmented_arguments_is_assembled(llm_server: LLMServer,
                                                          provider: str) -> None:
    arguments = {"path": "src/App.tsx", "content": "export default () => <h1>Hi ü</h1>;\n"}
    llm_server.script(provider, [Reply(text="Writing.", calls=[
        Call("write_file", arguments, fragments=9)])])

    turn, deltas = complete(provider)

    assert deltas == ["Writing."]
    assert [(c.name, c.arguments) for c in turn.tool_calls] == [("write_file", arguments)]
    assert turn.tool_calls[0].id
    assert turn.stop_reason == "tool_use"


@ALL
def test_several_tool_calls_in_one_turn_keep_their_order(llm_server: LLMServer,
                                                         provider: str) -> None:
    calls = [Call("write_file", {"path": f"f{n}.txt", "content": str(n)}, fragments=n + 1)
             for n in range(3)]
    llm_server.script(provider, [Reply(calls=calls)])

    turn, deltas = complete(provider)

    assert deltas == []
    assert [c.arguments["path"] for c in turn.tool_calls] == ["f0.txt", "f1.txt", "f2.txt"]
    assert len({c.id for c in turn.tool_calls}) == 3


@STREAMED_ARGUMENTS
def test_invalid_json_arguments_are_kept_raw(llm_server: LLMServer, provider: str) -> None:
    broken = '{"path": "a.txt", "content": "unterminated'
    llm_server.script(provider, [Reply(calls=[Call("write_file", broken, fragments=4),
                                              Call("write_file", {"path": "b", "content": ""})])])

    turn, _ = complete(provider)

    first, second = turn.tool_calls
    assert first.arguments is None and first.raw_arguments == broken
    assert second.arguments == {"path": "b", "content": ""}


@STREAMED_ARGUMENTS
def test_a_json_value_that_is_not_an_object_is_invalid(llm_server: LLMServer,
                                                       provider: str) -> None:
    llm_server.script(provider, [Reply(calls=[Call("write_file", '["a.txt"]')])])

    turn, _ = complete(provider)

    assert turn.tool_calls[0].arguments is None
    assert turn.tool_calls[0].raw_arguments == '["a.txt"]'


@ALL
def test_rate_limit_is_retried_after_retry_after(llm_server: LLMServer, provider: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # given: two 429s, the second asking for a one-second wait
    llm_server.script(provider, [Fail(429, "slow down", retry_after="0"),
                                 Fail(429, "slow down", retry_after="1"), Reply(text="ok")])
    # when
    with caplog.at_level(logging.WARNING, logger="workflows.providers.retry"):
        turn, deltas = complete(provider)
    # then: three attempts, and the wait after the second honoured the header
    assert turn.text == "ok" and deltas == ["ok"]
    assert len(llm_server.requests_for(provider)) == 3
    delays = [r.delay for r in caplog.records if hasattr(r, "delay")]
    assert len(delays) == 2 and delays[1] >= 1.0


@ALL
def test_server_errors_are_retried_up_to_the_limit(llm_server: LLMServer, provider: str,
                                                   settings) -> None:  # noqa: ANN001
    settings.LLM_MAX_ATTEMPTS = 3
    status = 529 if provider == "anthropic" else 503
    llm_server.script(provider, [Fail(500, "boom"), Fail(status, "overloaded"),
                                 Fail(500, "boom again"), Reply(text="never sent")])

    with pytest.raises(ProviderError) as caught:
        complete(provider)

    assert caught.value.transient is True
    assert caught.value.provider == provider
    assert "boom again" in str(caught.value)
    assert len(llm_server.requests_for(provider)) == 3
    assert llm_server.remaining(provider) == 1


@ALL
@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_final(llm_server: LLMServer, provider: str, status: int) -> None:
    llm_server.script(provider, [Fail(status, "invalid x-api-key"), Reply(text="never sent")])

    with pytest.raises(ProviderError) as caught:
        complete(provider)

    assert caught.value.transient is False
    assert "invalid x-api-key" in str(caught.value) and str(status) in str(caught.value)
    assert len(llm_server.requests_for(provider)) == 1


@ALL
@pytest.mark.parametrize("fault", ["error", "drop"])
def test_mid_stream_failure_after_text_is_not_retried(llm_server: LLMServer, provider: str,
                                                      fault: str) -> None:
    # given: the stream breaks after one of two text deltas reached the caller
    llm_server.script(provider, [Reply(text=["Hel", "lo"], fail_after=1, fault=fault),
                                 Reply(text="Hello")])
    # when
    adapter, model = get_provider(MODELS[provider])
    deltas: list[str] = []
    with pytest.raises(ProviderError) as caught:
        adapter.complete(model=model, system="", messages=[UserMessage("hi")], tools=TOOLS,
                         on_text=deltas.append, timeout=30)
    # then: one attempt only, so the caller never sees "Hel" twice
    assert deltas == ["Hel"]
    assert caught.value.transient is False
    assert "not retried" in str(caught.value)
    assert len(llm_server.requests_for(provider)) == 1


@ALL
@pytest.mark.parametrize("fault", ["error", "drop"])
def test_mid_stream_failure_before_any_text_is_retried(llm_server: LLMServer, provider: str,
                                                       fault: str) -> None:
    # given: a tool call is half sent (no text), then the stream breaks
    call = Call("write_file", {"path": "a", "content": "b"})
    llm_server.script(provider, [Reply(calls=[call], fail_after=1, fault=fault),
                                 Reply(calls=[call])])
    # when
    turn, deltas = complete(provider)
    # then
    assert deltas == []
    assert [c.arguments for c in turn.tool_calls] == [{"path": "a", "content": "b"}]
    assert len(llm_server.requests_for(provider)) == 2


@ALL
def test_connection_refused_is_transient(llm_server: LLMServer, provider: str, settings,  # noqa: ANN001
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    settings.LLM_MAX_ATTEMPTS = 2
    dead = LLMServer().start()
    url = dead.url
    dead.stop()
    variable = {"anthropic": "ANTHROPIC_BASE_URL", "openai": "OPENAI_BASE_URL",
                "google": "GOOGLE_GEMINI_BASE_URL"}[provider]
    monkeypatch.setenv(variable, url + ("/v1" if provider == "openai" else ""))

    with pytest.raises(ProviderError) as caught:
        complete(provider)

    assert caught.value.transient is True


@ALL
def test_a_missing_key_is_a_clear_final_error(llm_server: LLMServer, provider: str,
                                              settings) -> None:  # noqa: ANN001
    setting = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
               "google": "GEMINI_API_KEY"}[provider]
    setattr(settings, setting, "")

    with pytest.raises(ProviderError) as caught:
        complete(provider)

    assert caught.value.transient is False
    assert setting in str(caught.value)
    assert llm_server.requests == []


@ALL
def test_the_key_is_sent(llm_server: LLMServer, provider: str) -> None:
    llm_server.script(provider, [Reply(text="ok")])

    complete(provider)

    headers = llm_server.requests_for(provider)[0].headers
    if provider == "google":
        assert headers["x-goog-api-key"] == "test-gemini-key"
    else:
        assert headers["authorization"] == f"Bearer test-{provider}-key"


@ALL
def test_base_url_variables_are_honoured(llm_server: LLMServer, provider: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # given: a second server, named only by the SDK's own variable
    with LLMServer() as other:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", other.url)
        monkeypatch.setenv("OPENAI_BASE_URL", f"{other.url}/v1")
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", other.url)
        other.script(provider, [Reply(text="from the other one")])
        # when
        turn, _ = complete(provider)
        # then
        assert turn.text == "from the other one"
        assert len(other.requests_for(provider)) == 1
    assert llm_server.requests == []


@pytest.mark.parametrize("suffix", ["/v1beta", "/v1beta/", "/v1"])
def test_gemini_base_url_may_name_the_api_version(llm_server: LLMServer, suffix: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", llm_server.url + suffix)
    llm_server.script("google", [Reply(text="ok")])

    turn, _ = complete("google")

    assert turn.text == "ok"
    version = suffix.strip("/")
    assert llm_server.requests_for("google")[0].path == \
        f"/{version}/models/gemini-test:streamGenerateContent"
    assert llm_server.requests_for("google")[0].query == {"alt": ["sse"]}


def test_gemini_defaults_to_the_sdk_api_version(llm_server: LLMServer) -> None:
    llm_server.script("google", [Reply(text="ok")])

    complete("google")

    assert llm_server.requests_for("google")[0].path == \
        "/v1/models/gemini-test:streamGenerateContent"


@pytest.mark.parametrize(("model", "provider", "name"), [
    ("anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    ("openai/gpt-5", "openai", "gpt-5"),
    ("google/gemini-3-pro", "google", "gemini-3-pro"),
    ("gemini/gemini-3-pro", "google", "gemini-3-pro"),
    ("openai/ft:gpt-4o:org/abc", "openai", "ft:gpt-4o:org/abc"),
])
def test_model_strings_name_provider_and_model(model: str, provider: str, name: str) -> None:
    adapter, bare = get_provider(model)
    assert (adapter.name, bare) == (provider, name)


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_no_model_means_the_default(settings, empty: str | None) -> None:  # noqa: ANN001
    settings.DEFAULT_MODEL = "openai/gpt-default"
    adapter, bare = get_provider(empty)
    assert (adapter.name, bare) == ("openai", "gpt-default")


@pytest.mark.parametrize("model", ["mistral/large", "claude-sonnet-4-5", "anthropic/", "/x"])
def test_unknown_models_are_refused(model: str) -> None:
    with pytest.raises(UnknownModel, match="unknown model"):
        get_provider(model)
