from django.apps import AppConfig


class BetterAuthConfig(AppConfig):
    name = "weldr_agent.betterauth"
    label = "betterauth"
    verbose_name = "Better Auth (platform)"

    def ready(self) -> None:
        from weldr_agent import lifecycle
        from weldr_agent.betterauth.checks import schema_check

        # First of all: a misnamed table is found before anything else starts.
        lifecycle.register("better-auth-schema", order=5, startup=schema_check)
