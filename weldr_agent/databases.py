"""Route each app to its database: the machine's state (`default`) or shared data (`shared`)."""

from __future__ import annotations

from typing import Any

STATE_DB = "default"
SHARED_DB = "shared"

# Every app the project installs must be listed here: an unknown label is refused, so a new
# app cannot silently land in the wrong database.
APP_DATABASES = {
    "admin": STATE_DB,
    "auth": STATE_DB,
    "contenttypes": STATE_DB,
    "sessions": STATE_DB,
    "messages": STATE_DB,
    "weldr_agent": STATE_DB,
    "mounts": STATE_DB,
    "sandbox": STATE_DB,
    "previews": STATE_DB,
    "commands": STATE_DB,
    "egress": STATE_DB,
    "workflows": SHARED_DB,
    "betterauth": SHARED_DB,
}


class UnknownAppError(LookupError):
    pass


def database_for(app_label: str) -> str:
    try:
        return APP_DATABASES[app_label]
    except KeyError:
        raise UnknownAppError(
            f"App {app_label!r} has no database; add it to weldr_agent.databases.APP_DATABASES."
        ) from None


class StateSharedRouter:
    def db_for_read(self, model: Any, **hints: Any) -> str:
        return database_for(model._meta.app_label)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return database_for(model._meta.app_label)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return database_for(obj1._meta.app_label) == database_for(obj2._meta.app_label)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return database_for(app_label) == db
