"""Test settings: start (or find) the real services first, then load the agent's settings."""

from tests import services

services.ensure()

from weldr_agent.settings import *  # noqa: E402,F403

# The state database as a file in tests too: Django's default in-memory test database uses a
# shared cache, where concurrent writers (threads racing for a port) fail with "table is
# locked" instead of waiting like they do on the real file.
WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": str(WELDR_ENV_VOL / "test-state.sqlite3")}  # noqa: F405
