from django.apps import AppConfig


class EgressConfig(AppConfig):
    """Egress policies: what each bucket's sandboxes may reach (docs/security.md, "Network")."""

    name = "egress"

