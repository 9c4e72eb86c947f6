from django.apps import AppConfig


class CommandsConfig(AppConfig):
    """POST /exec and background commands, in each bucket's command sandbox (sandbox/bucket.py)."""

    name = "commands"

    def ready(self) -> None:
        from commands import lifecycle

        lifecycle.register()
        _exec_lookup_register()


def _exec_lookup_register() -> None:
    """A background command belongs to its bucket: /exec/{exec_id} is the bucket's to touch."""
    from commands.background import ExecNotFound
    from commands.models import ExecCommand
    from weldr_agent import access

    def resolve(exec_id: str) -> access.Target | None:
        bucket = ExecCommand.objects.filter(id=exec_id).values_list("bucket", flat=True).first()
        return None if bucket is None else access.Target("bucket", bucket)

    # The same body as exec_get's for a missing id.
    access.lookup_register("exec_id", resolve=resolve,
                           missing=lambda exec_id: ExecNotFound(f"No command with id {exec_id!r}."))
