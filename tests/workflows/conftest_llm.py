"""pytest plugin: the `llm_server` fixture, a provider-protocol server (llm_server.py).

Load it with `pytest_plugins = ["tests.workflows.conftest_llm"]` in a test module (pytest refuses
pytest_plugins in a conftest.py below the top one; from tests/workflows/conftest.py, import
the fixture instead: `from tests.workflows.conftest_llm import llm_server`). The fixture
points settings and the environment (ANTHROPIC_BASE_URL, OPENAI_BASE_URL,
GOOGLE_GEMINI_BASE_URL, fake keys) at the server, so get_provider() and a child agent process
started with `llm_server.env()` both talk to it; retries back off in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.workflows.llm_server import FAST_RETRY, LLMServer


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch, settings) -> Iterator[LLMServer]:  # noqa: ANN001
    server = LLMServer().start()
    try:
        for name, value in {**server.env(), **FAST_RETRY}.items():
            monkeypatch.setenv(name, value)
        settings.ANTHROPIC_API_KEY = server.env()["ANTHROPIC_API_KEY"]
        settings.OPENAI_API_KEY = server.env()["OPENAI_API_KEY"]
        settings.GEMINI_API_KEY = server.env()["GEMINI_API_KEY"]
        settings.LLM_RETRY_BASE_SECONDS = float(FAST_RETRY["LLM_RETRY_BASE_SECONDS"])
        settings.LLM_RETRY_MAX_SECONDS = float(FAST_RETRY["LLM_RETRY_MAX_SECONDS"])
        yield server
    finally:
        server.stop()
