from django.apps import AppConfig


class SandboxAppConfig(AppConfig):
    """The sandbox floor: no models, no URLs; its pools start before and stop after their users."""

    name = "sandbox"

    def ready(self) -> None:
        from rest_framework import serializers

        from sandbox import network, runtime, warm
        from weldr_agent import health, lifecycle

        health.check_register("oci_runtime", runtime.check_oci_runtime)
        health.figure_register("oci_runtime", runtime.detector.detect,
                               field=serializers.CharField(allow_null=True))

        # The netns pool and the firewall start before and stop after every sandbox's user.
        lifecycle.register("sandbox", order=40, startup=network.netns_pool.start,
                           shutdown=lambda deadline: floor_shutdown())
        # Warm sandboxes need the netns pool; shut down after the previews stopped.
        lifecycle.register("preview-pool", order=45, startup=warm.warm_pool.start,
                           shutdown=lambda deadline: warm.warm_pool.shutdown())


def floor_shutdown() -> None:
    """After every sandbox's user stopped (the agent's shutdown, the test process's end): the
    namespaces and firewall, then the emptied parent cgroup."""
    from sandbox import container, network

    network.netns_pool.shutdown()
    container.cgroup_parent_remove()
