"""The databases (the machine's state, the shared project data), Better Auth's tables in the
shared one, and the channel layer.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from weldr_agent.settings.core import PRODUCTION, WELDR_ENV_VOL
from weldr_agent.settings.parse import boolean, choice, env, integer, number

# ---------------------------------------------------------------------------------------------
# Databases: the machine's state (local SQLite) and the shared project data (PostgreSQL)
# ---------------------------------------------------------------------------------------------

_SQLITE_OPTIONS = {
    # IMMEDIATE takes the write lock at BEGIN, so "count, then insert" in one transaction is
    # serialised between requests instead of failing with "database is locked" on upgrade.
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
STATE_DB_PATH = Path(env.str("STATE_DB_PATH", default=str(WELDR_ENV_VOL / "state.sqlite3")))
DATABASE_URL = env.str("DATABASE_URL", default="")
if DATABASE_URL:
    try:
        _shared = env.db_url_config(DATABASE_URL)
    except Exception as error:  # django-environ raises several types for a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {error}") from error
    if not _shared.get("ENGINE"):
        raise ImproperlyConfigured("DATABASE_URL has an unknown scheme; use postgres://…")
else:
    _shared = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(WELDR_ENV_VOL / "shared.sqlite3"),
        "OPTIONS": dict(_SQLITE_OPTIONS),
    }
# The platform's PostgreSQL is shared by every agent of the fleet: each agent holds at most
# SHARED_DB_POOL_SIZE connections (psycopg's pool, Django's OPTIONS["pool"]), whatever its load.
# A thread takes one for a unit of work and gives it back (request end, database_sync_to_async,
# asyncdb, a workflow run before each model call); more threads than connections wait for one up
# to SHARED_DB_POOL_TIMEOUT_SECONDS. An idle connection is closed after
# SHARED_DB_POOL_MAX_IDLE_SECONDS (one per interval), so an idle agent holds none.
SHARED_DB_POOL_SIZE = integer("SHARED_DB_POOL_SIZE", 5, low=1, high=1000)
SHARED_DB_POOL_MAX_IDLE_SECONDS = number("SHARED_DB_POOL_MAX_IDLE_SECONDS", 60.0, low=0.5,
                                         high=86400)
SHARED_DB_POOL_TIMEOUT_SECONDS = number("SHARED_DB_POOL_TIMEOUT_SECONDS", 30.0, low=0.1,
                                        high=3600)
if _shared["ENGINE"] == "django.db.backends.postgresql":
    _shared.setdefault("OPTIONS", {})
    _shared["OPTIONS"]["pool"] = {
        "min_size": 0, "max_size": SHARED_DB_POOL_SIZE, "name": "weldr-shared",
        "max_idle": SHARED_DB_POOL_MAX_IDLE_SECONDS, "timeout": SHARED_DB_POOL_TIMEOUT_SECONDS,
    }
    # A pooled connection goes back to the pool when Django "closes" it (required by the pool).
    _shared["CONN_MAX_AGE"] = 0
    # The pool checks a connection before handing it out: a restarted PostgreSQL costs no error.
    _shared["CONN_HEALTH_CHECKS"] = True
    # PgBouncer in transaction mode (docs/performance.md, "Database connections"): a named
    # cursor cannot outlive its transaction there; prepared statements are off (Django's default
    # prepare_threshold None with client-side binding).
    _shared["DISABLE_SERVER_SIDE_CURSORS"] = True
else:
    _shared["CONN_MAX_AGE"] = None
    if name := env.str("SHARED_TEST_DB_NAME", default=""):
        _shared["TEST"] = {"NAME": name}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(STATE_DB_PATH),
        "OPTIONS": dict(_SQLITE_OPTIONS),
        # A local file: one connection per thread for the life of the process. Opening one per
        # request (and running init_command) was a third of an exec's round trip.
        "CONN_MAX_AGE": None,
    },
    "shared": _shared,
}
DATABASE_ROUTERS = ["weldr_agent.databases.StateSharedRouter"]

# ---------------------------------------------------------------------------------------------
# Better Auth as the platform configures it (BETTER_AUTH_SECRET and _URL are above)
# ---------------------------------------------------------------------------------------------

# Better Auth's `basePath`: the JWKS is at BETTER_AUTH_URL + BETTER_AUTH_BASE_PATH + "/jwks".
BETTER_AUTH_BASE_PATH = env.str("BETTER_AUTH_BASE_PATH", default="/api/auth").rstrip("/")
if BETTER_AUTH_BASE_PATH and not re.match(r"^(/[A-Za-z0-9._~-]+)+$", BETTER_AUTH_BASE_PATH):
    raise ImproperlyConfigured(
        f"BETTER_AUTH_BASE_PATH must be a path like /api/auth; got {BETTER_AUTH_BASE_PATH!r}.")
# Better Auth's `advanced.cookiePrefix`: the session cookie is <prefix>.session_token (and
# __Secure-<prefix>.session_token over HTTPS).
BETTER_AUTH_COOKIE_PREFIX = env.str("BETTER_AUTH_COOKIE_PREFIX", default="better-auth")
if not re.match(r"^[A-Za-z0-9._-]{1,64}$", BETTER_AUTH_COOKIE_PREFIX):
    raise ImproperlyConfigured("BETTER_AUTH_COOKIE_PREFIX must be 1-64 characters of "
                               f"A-Z a-z 0-9 . _ -; got {BETTER_AUTH_COOKIE_PREFIX!r}.")
# Better Auth's models and their tables ("model=table,…", each model's `modelName`); a model not
# named keeps its own name. The agent reads user, session, jwks and apikey; account and
# verification are named so that the tables made for development match the platform's.
BETTER_AUTH_MODELS = ("user", "session", "account", "verification", "jwks", "apikey")
BETTER_AUTH_TABLES = {model: model for model in BETTER_AUTH_MODELS}
for _item in filter(None, env.str("BETTER_AUTH_TABLES", default="").split(",")):
    _model, _eq, _table = (part.strip() for part in _item.partition("="))
    if _model not in BETTER_AUTH_MODELS or not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", _table):
        raise ImproperlyConfigured(
            "BETTER_AUTH_TABLES must look like user=users,session=sessions (models: "
            f"{', '.join(BETTER_AUTH_MODELS)}; tables: SQL identifiers); got {_item!r}.")
    BETTER_AUTH_TABLES[_model] = _table
# How the platform names columns: Better Auth's own field names (camelCase, its default), or
# snake_case (a Drizzle schema with `email_verified`, or Better Auth's `fields` option).
BETTER_AUTH_COLUMNS = choice("BETTER_AUTH_COLUMNS",
                              env.str("BETTER_AUTH_COLUMNS", default="camelCase"),
                              ("camelCase", "snake_case"))
# Create Better Auth's tables where they are missing (migration betterauth/0001). Off in
# production: there the platform owns them, and a missing one is a configuration error that
# start-up names, not an empty table made under a wrong name.
BETTER_AUTH_CREATE_TABLES = boolean("BETTER_AUTH_CREATE_TABLES", default=not PRODUCTION)

# ---------------------------------------------------------------------------------------------
# Channel layer: Redis when REDIS_URL is set, in-memory otherwise
# ---------------------------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    if not re.match(r"^rediss?://", REDIS_URL):
        raise ImproperlyConfigured("REDIS_URL must start with redis:// or rediss://.")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, exactly channels-redis's
                # 5 s blocking BZPOPMIN: idle consumers then die of "Timeout reading". Wait longer.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30,
                           "socket_connect_timeout": 10}],
                "prefix": env.str("CHANNEL_LAYER_PREFIX", default="asgi"),
                "capacity": 5000,
                "expiry": 60,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}
    }

