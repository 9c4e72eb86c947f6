"""Integrations that can be installed into a project's app (registry.py, services.py)."""
