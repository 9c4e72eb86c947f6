"""LLM providers behind one interface; see base.py. Adding a provider is one module."""

# Each adapter (and so its SDK) is imported on first use, in the run's worker thread: not at
# start-up, where importing all three SDKs took 1.6 s of CPU (8.6 s at load 6) before /health
# answered, and ~100 MB of memory an agent keeps whether it calls a model or not (#17,
# docs/performance.md "Agent start-up and memory").
