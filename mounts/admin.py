from django.contrib import admin

from mounts.models import Mount


@admin.register(Mount)
class MountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: a row mirrors the machine; editing it would lie. Use the API to change it."""

    list_display = ["bucket", "status", "cache_size_mb", "buffer_size_mb", "restored",
                    "mounted_at", "synced_at"]
    list_filter = ["status", "restored"]
    search_fields = ["bucket"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
