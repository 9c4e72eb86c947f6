from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        from weldr_agent import lifecycle
        from workflows import checkpoints, tenancy, worker

        # Who owns which project and bucket, for the one authorization rule (weldr_agent.access).
        tenancy.register()
        # Runs held off during a snapshot restore; snapshot events on the branches' streams.
        checkpoints.register()

        # After mounts and previews (lower orders): a run may need both.
        lifecycle.register("workflows", order=70, startup=worker_start_hook,
                           shutdown=worker.worker_stop)


def worker_start_hook() -> None:
    from workflows import worker

    worker.worker_start()
