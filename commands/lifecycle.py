"""Start-up and shutdown of command execution, and the bucket unmount guard."""

from __future__ import annotations

import logging

from django.conf import settings

from commands.models import ExecCommand
from commands.services import exec_bucket_cleanup
from sandbox import bucket_spec
from sandbox.bucket import bucket_sandboxes, exec_base
from sandbox.runtime import runtime_root
from weldr_agent import lifecycle, runner

logger = logging.getLogger("weldr.exec")


def startup() -> None:
    """Commands of a previous run died with it: record that, and remove their sandboxes."""
    stale = ExecCommand.objects.mark_killed()
    if stale:
        logger.info("%d background commands of a previous run marked killed", stale)
    prefix = bucket_spec.container_name(instance_id=settings.INSTANCE_ID, bucket="")
    for name in ("runc", "crun"):
        root = runtime_root(name)
        if not root.is_dir():
            continue
        for state in root.iterdir():
            if state.name.startswith(prefix):
                binary = runner.tool(name)
                runner.run(bucket_spec.runtime_argv(binary, root=root, verb="delete",
                                                    name=state.name, extra=("--force",)),
                           timeout=30, check=False)
    exec_base().mkdir(parents=True, exist_ok=True)


def shutdown(deadline: float) -> None:
    """Kill every command (background ones too) by removing every sandbox."""
    bucket_sandboxes.remove_all()
    ExecCommand.objects.mark_killed()


def unmount_guard(bucket: str, force: bool) -> None:
    """Before a bucket is unmounted: its commands die and its sandbox lets go of the mount."""
    exec_bucket_cleanup(bucket)
    ExecCommand.objects.filter(bucket=bucket).mark_killed()


def commands_running(bucket: str) -> dict[str, list[dict]]:
    """What a snapshot restore of `bucket` will kill (mounts/snapshots.py reports it)."""
    return {"commands_stopped": [
        {"id": str(row.id), "status": row.status} for row in
        ExecCommand.objects.filter(bucket=bucket, status=ExecCommand.Status.RUNNING)]}


def register() -> None:
    from mounts.guards import register_unmount_guard
    from mounts.snapshots import users_report_register

    lifecycle.register("exec", order=60, startup=startup, shutdown=shutdown)
    register_unmount_guard(unmount_guard)
    users_report_register(commands_running)
