"""LLM providers behind one interface; see base.py. Adding a provider is one module."""

from weldr_agent import lifecycle


def _preload() -> None:
    from workflows.providers.registry import preload

    preload()


# The SDKs take seconds of CPU to import. Done lazily, inside the first run's worker thread,
# that import starves the server's event loop (live SSE / websocket streams time out on a busy
# machine); `serve` runs start-up hooks before it accepts connections, so it costs nothing there.
lifecycle.register("providers", order=49, startup=_preload)
