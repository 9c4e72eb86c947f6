from django.apps import AppConfig


class PreviewsConfig(AppConfig):
    name = "previews"

    def ready(self) -> None:
        from previews import sandbox, services, warm, workspaces
        from weldr_agent import lifecycle

        # The sandbox machinery (netns pool, firewall) starts before and stops after its users.
        lifecycle.register("sandbox", order=40, startup=sandbox.pool.start,
                           shutdown=lambda deadline: sandbox.pool.shutdown())
        # Warm sandboxes need the netns pool; shut down after the previews stopped.
        lifecycle.register("preview-pool", order=45, startup=warm.pool.start,
                           shutdown=lambda deadline: warm.pool.shutdown())
        lifecycle.register("previews", order=50, startup=services.previews_reconcile,
                           shutdown=services.previews_stop_all)
        workspaces.register_unmount_guard(services.unmount_guard)

        from previews import exec_lifecycle

        exec_lifecycle.register()
        _exec_lookup_register()


def _exec_lookup_register() -> None:
    """A background command belongs to its bucket: /exec/{exec_id} is the bucket's to touch."""
    from previews.exec_background import ExecNotFound
    from previews.models_exec import ExecCommand
    from weldr_agent import access

    def resolve(exec_id: str) -> access.Target | None:
        bucket = ExecCommand.objects.filter(id=exec_id).values_list("bucket", flat=True).first()
        return None if bucket is None else access.Target("bucket", bucket)

    # The same body as exec_get's for a missing id.
    access.lookup_register("exec_id", resolve=resolve,
                           missing=lambda exec_id: ExecNotFound(f"No command with id {exec_id!r}."))
