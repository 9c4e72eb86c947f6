"""Typed errors of snapshots, restores and forks (rendered by weldr_agent.errors)."""

from __future__ import annotations

from rest_framework import status

from weldr_agent.errors import APIError, ConflictError, NotFoundError


class SnapshotNotFound(NotFoundError):
    default_code = "snapshot_not_found"
    default_detail = "The bucket has no snapshot with this id."


class InvalidSnapshotName(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_snapshot_name"
    default_detail = ("A snapshot name is 1-64 characters of letters, digits, '.', '_', '-' and "
                      "spaces, starting with a letter or digit.")


class SnapshotsUnavailable(ConflictError):
    """The `files` layout has no snapshots (docs/snapshots.md, "The files layout")."""

    default_code = "snapshots_unavailable"
    default_detail = ("Snapshots need the image layout; this bucket's workspace has the files "
                      "layout.")


class SnapshotFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "snapshot_failed"
    default_detail = "The snapshot could not be taken; the workspace was thawed."


class RestoreFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "restore_failed"
    default_detail = "The snapshot could not be restored."


class ForkExists(ConflictError):
    default_code = "fork_conflict"
    default_detail = "A workspace with this name is mounted already, or the bucket is a fork."


class ForkNotFound(NotFoundError):
    default_code = "fork_not_found"
    default_detail = "No fork of this name is mounted."
