"""The previews' view of the mounts app: where a bucket's workspace is, unmount guards, and what
a snapshot restore reports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mounts import guards, services, snapshots


def workspace_path(bucket: str) -> Path:
    """The live workspace of `bucket`; raises a 409 `not_mounted` when there is none."""
    return services.workspace_path(bucket)


def register_unmount_guard(guard: Callable[[str, bool], None]) -> None:
    guards.register_unmount_guard(guard)


def register_users_report(reporter: Callable[[str], dict[str, list[dict]]]) -> None:
    snapshots.users_report_register(reporter)
