from django.contrib import admin

from mounts.models import Mount, Snapshot


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows that mirror the machine or the volume: editing them would lie; the API changes
    them."""

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(Mount)
class MountAdmin(ReadOnlyAdmin):
    """Read-only: a row mirrors the machine; editing it would lie. Use the API to change it."""

    list_display = ["bucket", "status", "parent", "cache_size_mb", "buffer_size_mb", "restored",
                    "mounted_at", "synced_at"]
    list_filter = ["status", "restored"]
    search_fields = ["bucket", "parent"]


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    """Read-only: a row caches a sidecar in the bucket's volume; the API takes, restores and
    deletes snapshots."""

    list_display = ["bucket", "snapshot_id", "name", "kind", "created_at", "frozen_ms",
                    "size_bytes"]
    list_filter = ["kind", "bucket"]
    search_fields = ["bucket", "snapshot_id", "name"]
