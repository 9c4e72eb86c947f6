"""Model strings ("anthropic/claude-sonnet-4-5") → the adapter and the provider's model name.

Adding a provider: write its module (a class with `name` and `complete`, see base.py) and add
one line to PROVIDERS.
"""

from __future__ import annotations

import importlib

from django.conf import settings

from .base import Provider, UnknownModel
from .wire import api_key

# prefix → "module:Class"; imported on first use (preload() imports them all at once).
PROVIDERS = {
    "anthropic": "workflows.providers.anthropic:AnthropicProvider",
    "openai": "workflows.providers.openai:OpenAIProvider",
    "google": "workflows.providers.gemini:GeminiProvider",
    "gemini": "workflows.providers.gemini:GeminiProvider",
}

# footprint (#17): the name and key setting each adapter passes to api_key(). A run whose key is
# missing fails here, with the adapter's own error, before its SDK (up to ~60 MB) is imported.
KEYS = {
    "workflows.providers.anthropic:AnthropicProvider": ("anthropic", "ANTHROPIC_API_KEY"),
    "workflows.providers.openai:OpenAIProvider": ("openai", "OPENAI_API_KEY"),
    "workflows.providers.gemini:GeminiProvider": ("google", "GEMINI_API_KEY"),
}

_instances: dict[str, Provider] = {}


def get_provider(model: str | None) -> tuple[Provider, str]:
    """The adapter for `model` ("<provider>/<name>"; empty means DEFAULT_MODEL) and the name."""
    chosen = (model or "").strip() or settings.DEFAULT_MODEL
    prefix, _, name = chosen.partition("/")
    target = PROVIDERS.get(prefix.lower())
    if target is None or not name.strip():
        known = ", ".join(f'"{p}/…"' for p in PROVIDERS)
        raise UnknownModel(f"unknown model {chosen!r}: expected one of {known}")
    return _instance(target), name.strip()


def key_check(model: str | None) -> None:
    """Raise the adapter's own ProviderError when `model`'s provider has no API key, without
    importing the adapter (a run doomed to fail must not load its SDK)."""
    chosen = (model or "").strip() or settings.DEFAULT_MODEL
    target = PROVIDERS.get(chosen.partition("/")[0].lower())
    if target in KEYS:
        api_key(*KEYS[target])


def _instance(target: str) -> Provider:
    if target not in _instances:
        module, _, cls = target.partition(":")
        _instances[target] = getattr(importlib.import_module(module), cls)()
    return _instances[target]


def preload() -> None:
    """Import every adapter (and so its SDK) now, not in the middle of the first run."""
    for target in sorted(set(PROVIDERS.values())):
        _instance(target)
