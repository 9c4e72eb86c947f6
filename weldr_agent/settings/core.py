"""Mode, directories and Django's own settings: what every other area builds on.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from weldr_agent.settings.parse import boolean, choice, env, integer, number

BASE_DIR = Path(__file__).resolve().parent.parent.parent


# ---------------------------------------------------------------------------------------------
# Mode
# ---------------------------------------------------------------------------------------------

NODE_ENV = choice("NODE_ENV", env.str("NODE_ENV", default="development"),
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
DEBUG = boolean("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
PORT = integer("PORT", 8080, low=1, high=65535)
# GET /health answers within HEALTH_CHECK_TIMEOUT_SECONDS whatever a dependency does (a check still
# running then reports so), and reuses its answer for HEALTH_CACHE_SECONDS: a platform's probe and
# any anonymous caller cost at most one round of checks per window.
HEALTH_CHECK_TIMEOUT_SECONDS = number("HEALTH_CHECK_TIMEOUT_SECONDS", 0.8, low=0.05, high=30)
HEALTH_CACHE_SECONDS = number("HEALTH_CACHE_SECONDS", 5.0, low=0, high=300)


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
DATA_UPLOAD_MAX_MEMORY_SIZE = integer("MAX_REQUEST_BODY_BYTES", 2 * 1024 * 1024,
                                   low=1024, high=1024**3)
FILE_UPLOAD_MAX_BYTES = integer("FILE_UPLOAD_MAX_BYTES", 50 * 1024 * 1024, low=1024, high=1024**3)

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

