from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"

    def ready(self) -> None:
        from mounts import lifecycle, local, snapshots_forks, snapshots_store

        lifecycle.register()
        local.register()
        snapshots_store.register()
        snapshots_forks.register()
