from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        # Here, not at the top: the app registry must be ready before models are imported.
        from weldr_agent import lifecycle
        from workflows import checkpoints, tenancy, worker

        # Who owns which project and bucket, for the one authorization rule (weldr_agent.access).
        tenancy.register()
        # Runs held off during a snapshot restore; snapshot events on the branches' streams.
        checkpoints.register()

        # After mounts and previews (lower orders): a run may need both.
        lifecycle.register("workflows", order=70, startup=worker.worker_start,
                           shutdown=worker.worker_stop)
