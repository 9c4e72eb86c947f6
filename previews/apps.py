from django.apps import AppConfig


class PreviewsConfig(AppConfig):
    name = "previews"

    def ready(self) -> None:
        from previews import exec_lifecycle

        exec_lifecycle.register()
