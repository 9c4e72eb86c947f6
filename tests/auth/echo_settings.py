"""The agent's settings with the test-only echo endpoint (for a real `manage.py serve`)."""

from weldr_agent.settings import *  # noqa: F403

ROOT_URLCONF = "tests.auth.echo"
