"""The previews' view of the mounts app: where a bucket's workspace is, and unmount guards.

The mounts app provides `mounts.services.workspace_path(bucket)` (raises NotMounted, a 409
`not_mounted`) and `mounts.services.register_unmount_guard(fn)`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from weldr_agent.errors import ConflictError


class NotMounted(ConflictError):
    default_code = "not_mounted"
    default_detail = "The bucket is not mounted; mount it first (POST /mounts)."


def _mount_services() -> object:
    try:
        return importlib.import_module("mounts.services")
    except ModuleNotFoundError:
        return None


def workspace_path(bucket: str) -> Path:
    """The live workspace of `bucket`; raises a 409 `not_mounted` when there is none."""
    services = _mount_services()
    if hasattr(services, "workspace_path"):
        return services.workspace_path(bucket)
    # Until the mounts app provides it: a Mount row marked mounted, under WORKSPACE_BASE.
    from mounts.models import Mount

    if not Mount.objects.filter(bucket=bucket, status=Mount.Status.MOUNTED).exists():
        raise NotMounted()
    return settings.WORKSPACE_BASE / bucket


def register_unmount_guard(guard: Callable[[str, bool], None]) -> None:
    services = _mount_services()
    if hasattr(services, "register_unmount_guard"):
        services.register_unmount_guard(guard)
