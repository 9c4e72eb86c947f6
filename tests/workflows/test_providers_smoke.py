"""The manual smoke command, run here against the protocol server instead of the real API."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from tests.workflows.llm_server import Call, Fail, LLMServer, Reply

pytest_plugins = ["tests.workflows.conftest_llm"]


@pytest.mark.parametrize("model", ["anthropic/c", "openai/g", "google/g"])
def test_smoke_command_round_trip(llm_server: LLMServer, model: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    provider = model.split("/")[0]
    llm_server.script(provider, [Reply(text="I add.", calls=[Call("add", {"a": 20, "b": 22})]),
                                 Reply(text="It is 42.")])
    out = io.StringIO()

    call_command("provider_smoke", "--model", model, stdout=out)

    assert "add(" in out.getvalue() and "[end_turn;" in out.getvalue()
    assert "It is 42." in capsys.readouterr().out
    last = llm_server.requests_for(provider)[-1].body
    assert "42" in str(last)


def test_smoke_command_reports_provider_errors(llm_server: LLMServer) -> None:
    llm_server.script("openai", [Fail(401, "Incorrect API key provided")])

    with pytest.raises(CommandError, match="Incorrect API key provided"):
        call_command("provider_smoke", "--model", "openai/gpt", stdout=io.StringIO())
