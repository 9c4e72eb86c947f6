"""The platform's users, sessions and API keys, read-only: Better Auth owns these rows."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from weldr_agent.betterauth.models import ApiKey, Session, User


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(User)
class UserAdmin(ReadOnlyAdmin):
    list_display = ("email", "name", "id", "email_verified", "created_at")
    search_fields = ("email", "name", "id")


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "expires_at", "ip_address", "created_at")
    search_fields = ("id", "user__email", "user__id")
    # The token is a live credential: never shown.
    exclude = ("token",)
    list_select_related = ("user",)


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ("start", "name", "reference_id", "enabled", "expires_at", "created_at")
    search_fields = ("start", "name", "reference_id")
    # `key` is a hash, but there is nothing to learn from it.
    exclude = ("key",)
