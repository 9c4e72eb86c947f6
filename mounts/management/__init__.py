from django.conf import settings
from django.core.management import call_command


def state_db_ready() -> None:
    """Create and migrate the state database: a command may run first on a fresh machine."""
    settings.WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)
    call_command("migrate", database="default", interactive=False, verbosity=0)
