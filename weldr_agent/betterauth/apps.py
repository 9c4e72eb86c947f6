from django.apps import AppConfig


class BetterAuthConfig(AppConfig):
    name = "weldr_agent.betterauth"
    label = "betterauth"
    verbose_name = "Better Auth (platform)"
