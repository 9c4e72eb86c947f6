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
