from django.contrib import admin

from previews.models import PortLease, Preview


@admin.register(Preview)
class PreviewAdmin(admin.ModelAdmin):
    list_display = ("bucket", "port", "status", "exit_code", "started_at", "ended_at")
    list_filter = ("status",)
    search_fields = ("bucket",)
    readonly_fields = ("created_at",)


@admin.register(PortLease)
class PortLeaseAdmin(admin.ModelAdmin):
    list_display = ("port", "bucket", "created_at")
    ordering = ("port",)
