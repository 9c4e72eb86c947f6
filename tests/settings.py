"""Test settings: start (or find) the real services first, then load the agent's settings."""

from tests import services

services.ensure()

from weldr_agent.settings import *  # noqa: E402,F403
