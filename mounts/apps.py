from django.apps import AppConfig


class MountsConfig(AppConfig):
    name = "mounts"
