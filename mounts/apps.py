from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"

    def ready(self) -> None:
        from mounts import lifecycle

        lifecycle.register()
