from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"

    def ready(self) -> None:
        from mounts import health, lifecycle, local, snapshots_forks, snapshots_store

        lifecycle.register()
        local.register()
        health.register()
        snapshots_store.register()
        snapshots_forks.register()
