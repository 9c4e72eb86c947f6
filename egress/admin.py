from django.contrib import admin

from egress.models import EgressPolicy


@admin.register(EgressPolicy)
class EgressPolicyAdmin(admin.ModelAdmin):
    list_display = ("bucket", "mode", "updated_at")
    list_filter = ("mode",)
    search_fields = ("bucket",)
    # Changed through the API, which resolves names and applies it to running sandboxes.
    readonly_fields = ("bucket", "mode", "allow", "deny", "pinned", "updated_at")
