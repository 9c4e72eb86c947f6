from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"

    def ready(self) -> None:
        from mounts import health, lifecycle, local

        lifecycle.register()
        local.register()
        health.register()
