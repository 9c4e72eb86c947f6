"""Admin for agent tokens: read-only (only a hash is stored); revoking is the one action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from weldr_agent.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "read_only")
    search_fields = ("name", "prefix")
    readonly_fields = ("name", "prefix", "scope", "projects", "buckets", "read_only",
                       "token_hash", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    # A token is shown once, by `manage.py create_api_token`; the admin cannot make one.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="scope")
    def scope(self, row: ApiToken) -> str:
        return row.scope_text()

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = queryset.revoke()
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the agent owns (it writes them through its services, with their side effects on the
    machine): the admin shows them and never adds, changes or deletes one."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
