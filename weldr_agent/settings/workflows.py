"""Workflows and LLM providers, and the shutdown deadline everything is flushed within.
"""

from __future__ import annotations

import re

from django.core.exceptions import ImproperlyConfigured

from weldr_agent.settings.parse import env, integer, number

# ---------------------------------------------------------------------------------------------
# Workflows and LLM providers
# ---------------------------------------------------------------------------------------------

ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
GEMINI_API_KEY = env.str("GEMINI_API_KEY", default="")
DEFAULT_MODEL = env.str("DEFAULT_MODEL", default="anthropic/claude-sonnet-4-5")
WORKFLOW_STEP_TIMEOUT_SECONDS = integer("WORKFLOW_STEP_TIMEOUT_SECONDS", 900, low=5, high=86400)
WORKFLOW_MAX_TOOL_CALLS = integer("WORKFLOW_MAX_TOOL_CALLS", 200, low=1, high=10000)
# How long the event publisher holds a text delta for more to join it in one event: fewer rows,
# frames and sends at model speed (1,000 deltas/s → about 100 events/s), at most this much later.
WORKFLOW_EVENT_WINDOW_MS = number("WORKFLOW_EVENT_WINDOW_MS", 10.0, low=0, high=1000)
SSE_KEEPALIVE_SECONDS = number("SSE_KEEPALIVE_SECONDS", 15.0, low=0.1, high=600)
# Provider calls: our own retries (the SDKs' are off), bounded attempts, exponential backoff.
LLM_MAX_ATTEMPTS = integer("LLM_MAX_ATTEMPTS", 4, low=1, high=20)
LLM_RETRY_BASE_SECONDS = number("LLM_RETRY_BASE_SECONDS", 1.0, low=0.0, high=600)
LLM_RETRY_MAX_SECONDS = number("LLM_RETRY_MAX_SECONDS", 30.0, low=0.0, high=3600)
LLM_MAX_OUTPUT_TOKENS = integer("LLM_MAX_OUTPUT_TOKENS", 8192, low=1, high=10**6)
WORKFLOW_WORKERS = integer("WORKFLOW_WORKERS", 4, low=1, high=64)
WORKFLOW_PROVIDER_RETRIES = integer("WORKFLOW_PROVIDER_RETRIES", 3, low=0, high=20)
WORKFLOW_RETRY_BACKOFF_SECONDS = number("WORKFLOW_RETRY_BACKOFF_SECONDS", 1.0, low=0, high=600)
# Extra provider adapters, "prefix=dotted.path.Class,…": a model "prefix/name" uses that class
# (how a new provider is plugged in without touching the registry; the tests plug a scripted one).
WORKFLOW_EXTRA_PROVIDERS: dict[str, str] = {}
for _item in filter(None, env.str("WORKFLOW_EXTRA_PROVIDERS", default="").split(",")):
    _prefix, _eq, _path = _item.strip().partition("=")
    if not _eq or not re.match(r"^[a-z0-9-]+$", _prefix) or not re.match(r"^[\w.]+$", _path):
        raise ImproperlyConfigured("WORKFLOW_EXTRA_PROVIDERS must look like prefix=module.Class,…")
    WORKFLOW_EXTRA_PROVIDERS[_prefix] = _path

# ---------------------------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------------------------

# Matches fly.toml's kill_timeout: everything must be flushed and unmounted within it.
SHUTDOWN_TIMEOUT_SECONDS = integer("SHUTDOWN_TIMEOUT_SECONDS", 60, low=1, high=3600)

