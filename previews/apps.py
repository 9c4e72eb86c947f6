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
        workspaces.register_users_report(_previews_running)


def _previews_running(bucket: str) -> dict[str, list[dict]]:
    """What a snapshot restore of `bucket` will stop (mounts/snapshots.py reports it)."""
    from previews.models import Preview

    return {"previews_stopped": [
        {"bucket": row.bucket, "status": row.status, "port": row.port}
        for row in Preview.objects.filter(bucket=bucket, status__in=Preview.ACTIVE)]}
