"""Model strings ("anthropic/claude-sonnet-4-5") → the adapter and the provider's model name.

Adding a provider: write its module (a class with `name` and `complete`, see base.py) and add
one line to PROVIDERS.
"""

from __future__ import annotations

import importlib

from django.conf import settings

from .base import Provider, UnknownModel

# prefix → "module:Class"; imported on first use so an unused SDK costs nothing at start-up.
PROVIDERS = {
    "anthropic": "workflows.providers.anthropic:AnthropicProvider",
    "openai": "workflows.providers.openai:OpenAIProvider",
    "google": "workflows.providers.gemini:GeminiProvider",
    "gemini": "workflows.providers.gemini:GeminiProvider",
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
    if target not in _instances:
        module, _, cls = target.partition(":")
        _instances[target] = getattr(importlib.import_module(module), cls)()
    return _instances[target], name.strip()
