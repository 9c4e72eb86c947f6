"""Weldr Agent settings: every knob comes from the environment (django-environ).

Development (`NODE_ENV` unset or `development`) has an embedded default for everything, so
`make run` works on a fresh machine; production (`NODE_ENV=production`) requires the variables
the design document marks as required. A bad value stops start-up with `ImproperlyConfigured`
naming the variable.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from weldr_agent import localstore

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _int(name: str, default: int, *, low: int, high: int) -> int:
    try:
        value = env.int(name, default=default)
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"{name} must be a whole number: {error}") from error
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name} must be between {low} and {high}; got {value}.")
    return value


def _optional_int(name: str, *, low: int, high: int) -> int | None:
    if not env.str(name, default=""):
        return None
    return _int(name, 0, low=low, high=high)


def _float(name: str, default: float, *, low: float, high: float) -> float:
    try:
        value = env.float(name, default=default)
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"{name} must be a number: {error}") from error
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name} must be between {low} and {high}; got {value}.")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="1" if default else "0").strip().lower()
    if raw not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
        raise ImproperlyConfigured(f"{name} must be 1 or 0 (true/false); got {raw!r}.")
    return raw in {"1", "true", "yes", "on"}


_DURATION = re.compile(r"^\d+(ms|s|m|h)?$")


def _duration(name: str, default: str) -> str:
    value = env.str(name, default=default).strip()
    if not _DURATION.match(value):
        raise ImproperlyConfigured(f"{name} must be a duration like 30s, 5m or 1h; got {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------
# Mode
# ---------------------------------------------------------------------------------------------

NODE_ENV = _choice("NODE_ENV", env.str("NODE_ENV", default="development"),
                   ("development", "production", "test"))
PRODUCTION = NODE_ENV == "production"
VERSION = "0.1.0"

_REQUIRED_IN_PRODUCTION = (
    "DATABASE_URL", "REDIS_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY",
    "BETTER_AUTH_SECRET", "PROJECT_ID", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY",
)
if PRODUCTION:
    _missing = [name for name in _REQUIRED_IN_PRODUCTION if not env.str(name, default="")]
    if _missing:
        raise ImproperlyConfigured(
            f"NODE_ENV=production requires {', '.join(_missing)} to be set."
        )

# ---------------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------------

_DEV_DATA = BASE_DIR / ".data"
WELDR_ENV_VOL = Path(env.str(
    "WELDR_ENV_VOL", default="/dev/weldr_env_vol" if PRODUCTION else str(_DEV_DATA / "env"),
)).absolute()
WORKSPACE_BASE = Path(env.str(
    "WORKSPACE_BASE", default="/workspace" if PRODUCTION else str(_DEV_DATA / "workspace"),
)).absolute()
# Names of machine-global objects (network namespaces, veths, cgroups, containers) carry this
# id, so that two agents on one machine (or two test runs) never collide.
INSTANCE_ID = env.str(
    "WELDR_INSTANCE_ID", default=hashlib.sha256(str(WELDR_ENV_VOL).encode()).hexdigest()[:6],
)
if not re.match(r"^[a-z0-9]{1,8}$", INSTANCE_ID):
    raise ImproperlyConfigured("WELDR_INSTANCE_ID must be 1-8 characters of a-z and 0-9.")
# Where crun/runc keep container state; tmpfs keeps it fast and gone after a reboot.
RUNTIME_DIR = Path(env.str("WELDR_RUNTIME_DIR", default="/run/weldr")).absolute()

# ---------------------------------------------------------------------------------------------
# Django core
# ---------------------------------------------------------------------------------------------

BETTER_AUTH_SECRET = env.str("BETTER_AUTH_SECRET", default="" if PRODUCTION else "weldr-dev-secret")
# The platform's origin: JWT issuer and audience (Better Auth's jwt plugin uses the origin).
BETTER_AUTH_URL = env.str("BETTER_AUTH_URL", default="").rstrip("/")
PROJECT_ID = env.str("PROJECT_ID", default="")

SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY",
    default=hashlib.sha256(f"weldr-agent:{BETTER_AUTH_SECRET}".encode()).hexdigest(),
)
DEBUG = _bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
PORT = _int("PORT", 8080, low=1, high=65535)
# GET /health answers within HEALTH_CHECK_TIMEOUT_SECONDS whatever a dependency does (a check still
# running then reports so), and reuses its answer for HEALTH_CACHE_SECONDS: a platform's probe and
# any anonymous caller cost at most one round of checks per window.
HEALTH_CHECK_TIMEOUT_SECONDS = _float("HEALTH_CHECK_TIMEOUT_SECONDS", 0.8, low=0.05, high=30)
HEALTH_CACHE_SECONDS = _float("HEALTH_CACHE_SECONDS", 5.0, low=0, high=300)


def _origins(name: str, default: list[str]) -> list[str]:
    """Origins as a browser sends them (`scheme://host[:port]`): anything else never matches, and
    `*` cannot go with credentials, so both stop start-up instead of silently refusing."""
    values = [v.strip() for v in env.list(name, default=default) if v.strip()]
    for value in values:
        if not re.fullmatch(r"https?://[^/\s?#]+", value):
            raise ImproperlyConfigured(
                f"{name}: {value!r} is not an origin like https://app.example.com (scheme and "
                "host, optional port, no path, no trailing slash, no '*').")
    return values


# Browser origins allowed to call the API with credentials (CORS) and to open cookie-authenticated
# websockets. Production has no default: unset means no cross-origin access at all (only the
# agent's own origin); the platform's origin must be named explicitly.
CORS_ORIGIN = _origins("CORS_ORIGIN", [] if PRODUCTION else ["http://localhost:3000"])
CORS_ALLOWED_ORIGINS = CORS_ORIGIN
CORS_ALLOW_CREDENTIALS = True
CORS_ALLOW_HEADERS = ("authorization", "content-type", "x-api-key", "last-event-id", "accept")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "weldr_agent",
    "weldr_agent.betterauth",
    "mounts",
    "sandbox",
    "previews",
    "commands",
    "egress",
    "workflows",
]

MIDDLEWARE = [
    # All run on the event loop for API requests (no thread hops): weldr_agent/middleware.py.
    "corsheaders.middleware.CorsMiddleware",
    # After CORS, so that a browser can read the 503 shutting_down answer.
    "weldr_agent.middleware.ShutdownMiddleware",
    "weldr_agent.middleware.SecurityMiddleware",
    "weldr_agent.middleware.StaticFilesMiddleware",
    "weldr_agent.middleware.CommonMiddleware",
    # Before anything reads a body: oversized requests get 413 in the error shape.
    "weldr_agent.middleware.RequestBodyLimitMiddleware",
    # Sessions, authentication and messages, for /admin/ only (the API needs none of them).
    "weldr_agent.middleware.AdminMiddleware",
]
# The admin's checks look for those three in MIDDLEWARE; AdminMiddleware applies them.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]

ROOT_URLCONF = "weldr_agent.urls"
ASGI_APPLICATION = "weldr_agent.asgi.application"
APPEND_SLASH = False
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
# The admin's and Swagger UI's assets are served from the installed apps by WhiteNoise's finders;
# STATIC_ROOT is only needed by `collectstatic` (the Docker image sets it).
STATIC_ROOT = env.str("STATIC_ROOT", default=None)
WHITENOISE_USE_FINDERS = True
# Bodies are capped: file uploads have their own larger cap in the files API.
DATA_UPLOAD_MAX_MEMORY_SIZE = _int("MAX_REQUEST_BODY_BYTES", 2 * 1024 * 1024,
                                   low=1024, high=1024**3)
FILE_UPLOAD_MAX_BYTES = _int("FILE_UPLOAD_MAX_BYTES", 50 * 1024 * 1024, low=1024, high=1024**3)

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

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
SHARED_DB_POOL_SIZE = _int("SHARED_DB_POOL_SIZE", 5, low=1, high=1000)
SHARED_DB_POOL_MAX_IDLE_SECONDS = _float("SHARED_DB_POOL_MAX_IDLE_SECONDS", 60.0, low=0.5,
                                         high=86400)
SHARED_DB_POOL_TIMEOUT_SECONDS = _float("SHARED_DB_POOL_TIMEOUT_SECONDS", 30.0, low=0.1,
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
BETTER_AUTH_COLUMNS = _choice("BETTER_AUTH_COLUMNS",
                              env.str("BETTER_AUTH_COLUMNS", default="camelCase"),
                              ("camelCase", "snake_case"))
# Create Better Auth's tables where they are missing (migration betterauth/0001). Off in
# production: there the platform owns them, and a missing one is a configuration error that
# start-up names, not an empty table made under a wrong name.
BETTER_AUTH_CREATE_TABLES = _bool("BETTER_AUTH_CREATE_TABLES", default=not PRODUCTION)

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

# ---------------------------------------------------------------------------------------------
# S3 (Tigris in production; a local rclone S3 server in development when S3_ENDPOINT is unset)
# ---------------------------------------------------------------------------------------------

S3_REGION = env.str("S3_REGION", default="auto")
S3_LOCAL_PORT = _int("S3_LOCAL_PORT", 8333, low=1, high=65535)
S3_ENDPOINT = env.str("S3_ENDPOINT", default="https://fly.storage.tigris.dev" if PRODUCTION else "")
# True when the agent runs its own S3 server (rclone serve s3) and supervises it.
S3_LOCAL = not S3_ENDPOINT
S3_LOCAL_DIR = WELDR_ENV_VOL / "local-s3"
if S3_LOCAL:
    S3_ENDPOINT = f"http://127.0.0.1:{S3_LOCAL_PORT}"
if not re.match(r"^https?://[^\s/]+", S3_ENDPOINT):
    raise ImproperlyConfigured(f"S3_ENDPOINT must be an http(s) URL; got {S3_ENDPOINT!r}.")
S3_ENDPOINT = S3_ENDPOINT.rstrip("/")
S3_ACCESS_KEY_ID = env.str("S3_ACCESS_KEY_ID", default="")
S3_SECRET_ACCESS_KEY = env.str("S3_SECRET_ACCESS_KEY", default="")
if S3_LOCAL and not (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY):
    S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY = localstore.local_s3_keys(S3_LOCAL_DIR)
if not (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must both be set.")

# ---------------------------------------------------------------------------------------------
# Mounts (JuiceFS + Litestream); names follow the design document
# ---------------------------------------------------------------------------------------------

MAX_MOUNTS = _int("MAX_MOUNTS", 5, low=1, high=50)
FS_MOUNT_OPTIONS = env.str("FS_MOUNT_OPTIONS", default="")
# Budget the design distributes across active mounts (MB).
CACHE_TOTAL_MB = _int("CACHE_TOTAL_MB", 4096, low=256, high=10**7)
CACHE_RESERVED_META_MB = _int("CACHE_RESERVED_META_MB", 1024, low=0, high=10**6)
CACHE_RESERVED_OVERHEAD_MB = _int("CACHE_RESERVED_OVERHEAD_MB", 500, low=0, high=10**6)
# The design's 100-256 MB per mount does not fit 1 GB with 5 mounts (storage hazard 7,
# docs/mounts.md; docs/mounts.md
# has the measurement): 64-128 MB keeps the sum of buffers within the 400 MB pool.
BUFFER_POOL_MB = _int("BUFFER_POOL_MB", 400, low=32, high=10**6)
BUFFER_MIN_MB = _int("BUFFER_MIN_MB", 64, low=32, high=10**5)
BUFFER_MAX_MB = _int("BUFFER_MAX_MB", 128, low=32, high=10**5)
# Explicit overrides (unset means "computed from the budget").
CACHE_SIZE_MB = _optional_int("CACHE_SIZE_MB", low=1, high=10**8)
BUFFER_SIZE_MB = _optional_int("BUFFER_SIZE_MB", low=32, high=10**6)
FREE_SPACE_RATIO = _float("FREE_SPACE_RATIO", 0.01, low=0.0, high=0.9)
ATTR_CACHE_TTL = _int("ATTR_CACHE_TTL", 300, low=0, high=86400)
ENTRY_CACHE_TTL = _int("ENTRY_CACHE_TTL", 300, low=0, high=86400)
DIR_ENTRY_CACHE_TTL = _int("DIR_ENTRY_CACHE_TTL", 300, low=0, high=86400)
OPEN_CACHE_TTL = _int("OPEN_CACHE_TTL", 0, low=0, high=86400)
MAX_READAHEAD_MB = _int("MAX_READAHEAD_MB", 32, low=1, high=4096)
PREFETCH = _int("PREFETCH", 1, low=0, high=100)
VERIFY_CACHE = _choice("VERIFY_CACHE", env.str("VERIFY_CACHE", default="off"),
                       ("off", "none", "sha256", "md5", "full", "shrink"))
WRITEBACK_ENABLED = _bool("WRITEBACK_ENABLED", default=True)
UPLOAD_DELAY = _duration("UPLOAD_DELAY", "5m")
MAX_UPLOADS = _int("MAX_UPLOADS", 5, low=1, high=200)
# Days JuiceFS keeps deleted files and overwritten slices (format time). Nothing of the agent's
# needs more than a day: a restore goes back at most UPLOAD_DELAY + RESTORE_MARGIN_SECONDS, its
# fallback at most LITESTREAM_RETENTION; every day kept is a day of overwritten data the user
# pays for (docs/performance.md, "Bucket footprint"). JuiceFS counts in whole days.
TRASH_DAYS = _int("TRASH_DAYS", 1, low=0, high=365)
# Bucket footprint, fixed when a volume is formatted: JuiceFS's object compression and block
# size. JuiceFS's compaction of an image workspace's chunks writes the holes between scattered
# writes as zeros, and ext4's metadata and source code compress well: zstd. Not lz4: the zero-RPO
# sync puts staged blocks into S3 itself, encoded as JuiceFS would, and can only encode zstd.
JUICEFS_COMPRESSION = _choice("JUICEFS_COMPRESSION",
                              env.str("JUICEFS_COMPRESSION", default="zstd"), ("none", "zstd"))
JUICEFS_BLOCK_SIZE_KB = _int("JUICEFS_BLOCK_SIZE_KB", 4096, low=64, high=16384)
LITESTREAM_SYNC_INTERVAL = _duration("LITESTREAM_SYNC_INTERVAL", "10s")
LITESTREAM_SNAPSHOT_INTERVAL = _duration("LITESTREAM_SNAPSHOT_INTERVAL", "1h")
LITESTREAM_RETENTION = _duration("LITESTREAM_RETENTION", "4h")
MOUNT_TIMEOUT_SECONDS = _int("MOUNT_TIMEOUT_SECONDS", 120, low=5, high=3600)
# Metadata restored after a machine loss is taken from this long before now − UPLOAD_DELAY (or
# from the last zero-RPO sync, whichever is later), so that every block it names was uploaded.
RESTORE_MARGIN_SECONDS = _int("RESTORE_MARGIN_SECONDS", 60, low=0, high=86400)
# Go heap soft limits (storage hazard 7, docs/mounts.md): juicefs gets its buffer plus this much,
# litestream a fixed
# amount. GOMEMLIMIT makes the Go runtime collect harder instead of growing past it.
JUICEFS_MEMORY_OVERHEAD_MB = _int("JUICEFS_MEMORY_OVERHEAD_MB", 64, low=16, high=10**5)
LITESTREAM_MEMORY_LIMIT_MB = _int("LITESTREAM_MEMORY_LIMIT_MB", 32, low=8, high=10**5)
# JuiceFS run as root sets its own oom_score_adj to -1000 (never killed: the kernel kills the
# agent or a preview instead, however large JuiceFS grows). Set back to this after it mounts:
# still protected at its normal size, killable when it takes half the machine more than others.
JUICEFS_OOM_SCORE_ADJ = _int("JUICEFS_OOM_SCORE_ADJ", -500, low=-1000, high=1000)
# Workspace layout of NEW volumes (docs/mounts.md, "Layouts"): `files` (the workspace is the
# JuiceFS mount) or `image` (an ext4 image inside the JuiceFS volume, loop-mounted). An existing
# volume always keeps its own layout, whatever this says. `image` by default: the coding workload
# runs at local-disk speed on it, 15-50x slower on `files` (docs/performance.md).
WORKSPACE_LAYOUT = _choice("WORKSPACE_LAYOUT", env.str("WORKSPACE_LAYOUT", default="image"),
                           ("files", "image"))
# Size of a new image (sparse: only what is written costs space); fixed at creation.
WORKSPACE_IMAGE_SIZE_GB = _int("WORKSPACE_IMAGE_SIZE_GB", 20, low=1, high=16384)
# Loop device over the image with O_DIRECT on the backing file (docs/performance.md measures it).
WORKSPACE_IMAGE_DIRECT_IO = _bool("WORKSPACE_IMAGE_DIRECT_IO", default=False)
# Snapshots of image workspaces (docs/snapshots.md). Writers of the workspace wait while it is
# frozen: a clone that hangs must not hold them for long (the thaw runs whatever happens).
SNAPSHOT_CLONE_TIMEOUT_SECONDS = _int("SNAPSHOT_CLONE_TIMEOUT_SECONDS", 30, low=1, high=600)
# A snapshot before every workflow run, so that the whole workspace (untracked and ignored files
# too, which git cannot bring back) can go back to the state before it; 0 turns it off.
SNAPSHOT_BEFORE_RUN = _bool("SNAPSHOT_BEFORE_RUN", default=True)
# Retention of buckets without their own policy (PUT /mounts/{bucket}/snapshots/policy): keep
# at most this many (0: no limit) and none older than this many days (0: no limit). Every
# snapshot holds the blocks the workspace has changed since: unbounded, they grow the bucket.
SNAPSHOT_KEEP = _int("SNAPSHOT_KEEP", 20, low=0, high=100000)
SNAPSHOT_MAX_AGE_DAYS = _int("SNAPSHOT_MAX_AGE_DAYS", 30, low=0, high=36500)
# One writer per bucket (docs/mounts.md, "One writer per bucket"): mounting takes a lease, an S3
# object in the bucket naming this machine, renewed every MOUNT_LEASE_RENEW_SECONDS. Another
# machine may take it over once it is MOUNT_LEASE_TTL_SECONDS old; a holder that could not renew
# for that long stops writing first. Without conditional writes at the S3 server, a new lease is
# read back after MOUNT_LEASE_SETTLE_SECONDS to see that no other machine's write replaced it.
MOUNT_LEASE_TTL_SECONDS = _int("MOUNT_LEASE_TTL_SECONDS", 60, low=3, high=86400)
MOUNT_LEASE_RENEW_SECONDS = _float("MOUNT_LEASE_RENEW_SECONDS", 15.0, low=0.2, high=43200.0)
MOUNT_LEASE_SETTLE_SECONDS = _float("MOUNT_LEASE_SETTLE_SECONDS", 1.0, low=0.0, high=60.0)
# Set by Fly on every machine: part of the lease holder's id (mounts/lease.py, machine_id), so
# that two machines given copies of one volume are still two writers.
FLY_MACHINE_ID = env.str("FLY_MACHINE_ID", default="")
if MOUNT_LEASE_RENEW_SECONDS * 2 > MOUNT_LEASE_TTL_SECONDS:
    raise ImproperlyConfigured("MOUNT_LEASE_RENEW_SECONDS must be at most half of "
                               "MOUNT_LEASE_TTL_SECONDS (a renewal may fail once without the "
                               "lease expiring).")

# ---------------------------------------------------------------------------------------------
# Workspaces: a JuiceFS mount per bucket, or a local branch directory synced by rclone
# ---------------------------------------------------------------------------------------------

WORKSPACE_MODE = _choice("WORKSPACE_MODE", env.str("WORKSPACE_MODE", default="mount"),
                         ("mount", "local"))
# Local mode (docs/local-mode.md): branch directories on the local disk, synced to S3 by rclone.
BRANCHES_DIR = Path(
    env.str("WELDR_BRANCHES_DIR", default=str(WELDR_ENV_VOL / "branches"))
).absolute()
# Below this much free space on BRANCHES_DIR's disk, least recently used branch directories go.
BRANCH_MIN_FREE_MB = _int("WELDR_BRANCH_MIN_FREE_MB", 2048, low=0, high=10**8)
# Background backup of changed branch directories; each version is also synced at once.
BRANCH_SYNC_INTERVAL_SECONDS = _int("WELDR_BRANCH_SYNC_INTERVAL_SECONDS", 60, low=1, high=86400)
BRANCH_SYNC_TIMEOUT_SECONDS = _int("WELDR_BRANCH_SYNC_TIMEOUT_SECONDS", 1800, low=10, high=86400)

# ---------------------------------------------------------------------------------------------
# Previews and commands (the sandbox)
# ---------------------------------------------------------------------------------------------

PREVIEW_PORT_MIN = 3000
PREVIEW_PORT_MAX = 3019
OCI_RUNTIME = _choice("OCI_RUNTIME", env.str("OCI_RUNTIME", default="auto"),
                      ("auto", "crun", "runc"))
SANDBOX_MEMORY_MB = _int("SANDBOX_MEMORY_MB", 512, low=16, high=1024**2)
SANDBOX_CPUS = _float("SANDBOX_CPUS", 1.0, low=0.05, high=256)
SANDBOX_PIDS = _int("SANDBOX_PIDS", 512, low=8, high=10**6)
SANDBOX_UID = _int("SANDBOX_UID", 1000, low=1, high=2**31)
SANDBOX_OUTBOUND = _bool("SANDBOX_OUTBOUND", default=PRODUCTION)
# Egress (egress/policy.py, docs/security.md "Network"): the policy of a bucket that has none of
# its own; the deny-list applies to every bucket, on top of its own.
SANDBOX_EGRESS_MODE = _choice("SANDBOX_EGRESS_MODE", env.str("SANDBOX_EGRESS_MODE",
                              default="internet"), ("internet", "allowlist", "none"))


def _cidrs(name: str) -> list[str]:
    import ipaddress

    values = [v.strip() for v in env.list(name, default=[]) if v.strip()]
    for value in values:
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as error:
            raise ImproperlyConfigured(f"{name}: {value!r} is not a CIDR: {error}.") from error
    if len(values) > 100:
        raise ImproperlyConfigured(f"{name} holds {len(values)} CIDRs; at most 100.")
    return values


SANDBOX_EGRESS_ALLOW = _cidrs("SANDBOX_EGRESS_ALLOW")
SANDBOX_EGRESS_DENY = _cidrs("SANDBOX_EGRESS_DENY")
PREVIEW_STOP_GRACE_SECONDS = _int("PREVIEW_STOP_GRACE_SECONDS", 5, low=0, high=600)
PREVIEW_READY_TIMEOUT_SECONDS = _int("PREVIEW_READY_TIMEOUT_SECONDS", 120, low=1, high=3600)
# Previews are served by the agent's proxy on this address (every host address by default).
PREVIEW_BIND_ADDRESS = env.str("PREVIEW_BIND_ADDRESS", default="0.0.0.0")
PREVIEW_LOG_MAX_BYTES = _int("PREVIEW_LOG_MAX_BYTES", 10 * 1024 * 1024, low=4096, high=1024**3)
# Private previews (previews/tokens.py, docs/previews.md "Access"): a preview started without
# `access` is `token` (the proxy answers 401 without a preview access token) in production and
# `public` elsewhere, so that local development and tests open previews without minting tokens.
PREVIEW_ACCESS = _choice("PREVIEW_ACCESS", env.str(
    "PREVIEW_ACCESS", default="token" if PRODUCTION else "public"), ("public", "token"))
# The HMAC key of preview access tokens; empty derives one from SECRET_KEY (set it to rotate the
# tokens without touching Django's key, or to share it between machines behind one domain).
PREVIEW_TOKEN_SECRET = env.str("PREVIEW_TOKEN_SECRET", default="")
# Lifetime of a token minted without `ttl_seconds`, and the longest a caller may ask for.
PREVIEW_TOKEN_TTL_SECONDS = _int("PREVIEW_TOKEN_TTL_SECONDS", 3600, low=10, high=30 * 86400)
PREVIEW_TOKEN_MAX_TTL_SECONDS = _int("PREVIEW_TOKEN_MAX_TTL_SECONDS", 7 * 86400, low=10,
                                     high=365 * 86400)
# One-shot tokens already used, one empty file each until the token expires: a used link stays
# used across an agent restart.
PREVIEW_TOKENS_USED_DIR = WELDR_ENV_VOL / "preview-tokens-used"
# Serve each preview on its own host name, `{bucket}-{port}.{PREVIEW_DOMAIN}` (wildcard DNS and
# certificate: docs/previews.md), so that browsers give every preview its own origin and cookie
# jar, apart from the agent's. Empty: previews are served on the agent's host name, one port each.
PREVIEW_DOMAIN = env.str("PREVIEW_DOMAIN", default="").strip().strip(".").lower()
if PREVIEW_DOMAIN and not re.match(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
                                   PREVIEW_DOMAIN):
    raise ImproperlyConfigured(f"PREVIEW_DOMAIN must be a DNS name; got {PREVIEW_DOMAIN!r}.")
# Preview containers created ahead of time (sandbox/warm.py); 0 starts every preview cold.
PREVIEW_WARM_POOL = _int("PREVIEW_WARM_POOL", 2, low=0, high=20)
EXEC_MAX_CONCURRENT = _int("EXEC_MAX_CONCURRENT", 8, low=1, high=1000)
EXEC_OUTPUT_MAX_BYTES = _int("EXEC_OUTPUT_MAX_BYTES", 1024 * 1024, low=1024, high=1024**3)

# ---------------------------------------------------------------------------------------------
# Limits against cheap denial of service (weldr_agent/limits.py, docs/security.md "Limits")
# ---------------------------------------------------------------------------------------------

# Open connections the preview proxy serves on one preview port, and from one client address
# across all ports; beyond either, a new connection is answered 429 and closed before its
# request is read. Connections held while the app starts count too.
PREVIEW_MAX_CONNECTIONS_PER_PORT = _int("PREVIEW_MAX_CONNECTIONS_PER_PORT", 256, low=1,
                                        high=100_000)
PREVIEW_MAX_CONNECTIONS_PER_CLIENT = _int("PREVIEW_MAX_CONNECTIONS_PER_CLIENT", 64, low=1,
                                          high=100_000)
# How long a connection is held while the app does not listen yet (then it is closed).
PREVIEW_HOLD_SECONDS = _float("PREVIEW_HOLD_SECONDS", 30.0, low=0, high=600)
# Open event streams (SSE: /events, /exec, /exec/{id}/logs, /previews/{bucket}/logs; the events
# websocket) per principal; one more answers 429 `too_many_streams` (websocket: close 4429).
STREAMS_PER_PRINCIPAL = _int("STREAMS_PER_PRINCIPAL", 32, low=1, high=100_000)
# Finished background commands whose output stays on disk (WELDR_ENV_VOL/exec-logs), oldest
# removed first; each stream of a command is capped at EXEC_OUTPUT_MAX_BYTES there.
EXEC_LOGS_KEEP = _int("EXEC_LOGS_KEEP", 200, low=1, high=100_000)

# ---------------------------------------------------------------------------------------------
# Workflows and LLM providers
# ---------------------------------------------------------------------------------------------

ANTHROPIC_API_KEY = env.str("ANTHROPIC_API_KEY", default="")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
GEMINI_API_KEY = env.str("GEMINI_API_KEY", default="")
DEFAULT_MODEL = env.str("DEFAULT_MODEL", default="anthropic/claude-sonnet-4-5")
WORKFLOW_STEP_TIMEOUT_SECONDS = _int("WORKFLOW_STEP_TIMEOUT_SECONDS", 900, low=5, high=86400)
WORKFLOW_MAX_TOOL_CALLS = _int("WORKFLOW_MAX_TOOL_CALLS", 200, low=1, high=10000)
# How long the event publisher holds a text delta for more to join it in one event: fewer rows,
# frames and sends at model speed (1,000 deltas/s → about 100 events/s), at most this much later.
WORKFLOW_EVENT_WINDOW_MS = _float("WORKFLOW_EVENT_WINDOW_MS", 10.0, low=0, high=1000)
SSE_KEEPALIVE_SECONDS = _float("SSE_KEEPALIVE_SECONDS", 15.0, low=0.1, high=600)
# Provider calls: our own retries (the SDKs' are off), bounded attempts, exponential backoff.
LLM_MAX_ATTEMPTS = _int("LLM_MAX_ATTEMPTS", 4, low=1, high=20)
LLM_RETRY_BASE_SECONDS = _float("LLM_RETRY_BASE_SECONDS", 1.0, low=0.0, high=600)
LLM_RETRY_MAX_SECONDS = _float("LLM_RETRY_MAX_SECONDS", 30.0, low=0.0, high=3600)
LLM_MAX_OUTPUT_TOKENS = _int("LLM_MAX_OUTPUT_TOKENS", 8192, low=1, high=10**6)
WORKFLOW_WORKERS = _int("WORKFLOW_WORKERS", 4, low=1, high=64)
WORKFLOW_PROVIDER_RETRIES = _int("WORKFLOW_PROVIDER_RETRIES", 3, low=0, high=20)
WORKFLOW_RETRY_BACKOFF_SECONDS = _float("WORKFLOW_RETRY_BACKOFF_SECONDS", 1.0, low=0, high=600)
# Extra provider adapters, "prefix=dotted.path.Class,…": a model "prefix/name" uses that class
# (how a new provider is plugged in without touching the registry; the tests plug a scripted one).
WORKFLOW_EXTRA_PROVIDERS: dict[str, str] = {}
for _item in filter(None, env.str("WORKFLOW_EXTRA_PROVIDERS", default="").split(",")):
    _prefix, _eq, _path = _item.strip().partition("=")
    if not _eq or not re.match(r"^[a-z0-9-]+$", _prefix) or not re.match(r"^[\w.]+$", _path):
        raise ImproperlyConfigured("WORKFLOW_EXTRA_PROVIDERS must look like prefix=module.Class,…")
    WORKFLOW_EXTRA_PROVIDERS[_prefix] = _path

# ---------------------------------------------------------------------------------------------
# Shutdown
# ---------------------------------------------------------------------------------------------

# Matches fly.toml's kill_timeout: everything must be flushed and unmounted within it.
SHUTDOWN_TIMEOUT_SECONDS = _int("SHUTDOWN_TIMEOUT_SECONDS", 60, low=1, high=3600)

# ---------------------------------------------------------------------------------------------
# DRF, OpenAPI, logging
# ---------------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "weldr_agent.auth.AgentTokenAuthentication",
        "weldr_agent.auth.BetterAuthJWTAuthentication",
        "weldr_agent.auth.BetterAuthSessionAuthentication",
        "weldr_agent.auth.BetterAuthApiKeyAuthentication",
    ],
    # Authenticated (and PROJECT_ID's owner), then the tenant rule on the objects a view names.
    "DEFAULT_PERMISSION_CLASSES": ["weldr_agent.auth.IsAgentOrProjectOwner",
                                   "weldr_agent.access.TenantAccess"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "weldr_agent.schema.AutoSchema",
    "EXCEPTION_HANDLER": "weldr_agent.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Weldr Agent API",
    "DESCRIPTION": (
        "S3 buckets as durable POSIX workspaces, sandboxed previews and commands, and AI coding "
        "workflows with live events — one daemon per project machine."
    ),
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # POST /revert's `mode` (git | snapshot) beside the egress policy's `mode`.
    "ENUM_NAME_OVERRIDES": {"RevertModeEnum": ["git", "snapshot"],
                            "EgressModeEnum": "egress.policy.MODES",
                            # a mount's status, shown by the mounts and the forks (snapshots)
                            "MountStatusEnum": "mounts.models.Mount.Status"},
    # Security schemes come from weldr_agent.schema's extensions, one per authentication class.
}

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "daphne": {"level": "WARNING"},
    },
}
