"""The previews' view of the mounts app: where a bucket's workspace is, and unmount guards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mounts import services


def workspace_path(bucket: str) -> Path:
    """The live workspace of `bucket`; raises a 409 `not_mounted` when there is none."""
    return services.workspace_path(bucket)


def register_unmount_guard(guard: Callable[[str, bool], None]) -> None:
    services.register_unmount_guard(guard)
