from django.apps import AppConfig


class PreviewsConfig(AppConfig):
    name = "previews"

    def ready(self) -> None:
        from rest_framework import serializers

        from previews import services, workspaces
        from previews.models import Preview
        from weldr_agent import health, lifecycle

        health.figure_register(
            "previews",
            health.figure_count(lambda: Preview.objects.filter(status__in=["starting", "running"])),
            field=serializers.IntegerField())

        # After the sandbox floor's pools (sandbox/apps.py: 40, 45): stopped before them.
        lifecycle.register("previews", order=50, startup=services.previews_reconcile,
                           shutdown=services.previews_stop_all)
        workspaces.register_unmount_guard(services.unmount_guard)
