"""LLM providers behind one interface; see base.py. Adding a provider is one module."""
