from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"

    def ready(self) -> None:
        from mounts import lifecycle, local

        lifecycle.register()
        local.register()
