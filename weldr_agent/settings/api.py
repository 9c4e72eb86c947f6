"""Django REST framework, the OpenAPI schema, logging.
"""

from __future__ import annotations

from weldr_agent.settings.core import VERSION
from weldr_agent.settings.parse import env

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
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "weldr_agent.negotiation.ContentNegotiation",
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
