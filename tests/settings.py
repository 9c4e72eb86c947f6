"""Test settings: start (or find) the real servers first (tests/servers.py), then the settings."""

from tests import servers

servers.ensure()

from weldr_agent.settings import *  # noqa: E402,F403

# A file, not SQLite's shared-cache memory database, for the state test database: threads that
# race for a mount slot must wait on SQLite's lock (busy timeout), which a memory database with
# shared cache answers with "database table is locked" instead.
WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": str(WELDR_ENV_VOL / "test-state.sqlite3")}  # noqa: F405

# The test process's own threads (tests of concurrent writers) each keep a connection to the shared
# test database for the whole test, more than an agent's pool holds: no pool here. The agents the
# tests start run with the pool (tests/footprint measures it).
DATABASES["shared"]["OPTIONS"].pop("pool", None)  # noqa: F405

# The admin tests make a superuser and log in per test: Django's production hasher (PBKDF2, a
# million rounds) costs about a second of CPU each time, and these tests are about the admin,
# not the hash. Only this test process uses it; the agents the tests start keep the default.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Two warm preview sandboxes, not the production twenty (tests/conftest.py gives the agents the
# tests start the same): twenty per test would spend the suite's CPU on containers no test
# starts. tests/previews sets the sizes it tests.
PREVIEW_WARM_POOL = 2
