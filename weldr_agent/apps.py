from django.apps import AppConfig


class WeldrAgentConfig(AppConfig):
    name = "weldr_agent"
    verbose_name = "Weldr Agent"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI security schemes of weldr_agent.auth with drf-spectacular.
        from weldr_agent import schema  # noqa: F401
