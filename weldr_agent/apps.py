from django.apps import AppConfig


class WeldrAgentConfig(AppConfig):
    name = "weldr_agent"
    verbose_name = "Weldr Agent"
    default_auto_field = "django.db.models.BigAutoField"
