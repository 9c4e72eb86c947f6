"""Where a bucket's workspace is, and the exec API's check of a working directory.

Everything that touches the content of a workspace lives in mounts.workspace_fs; this module
keeps the names other apps import (`workspace`, `directory_beneath`, `clean`, the path errors).
"""

from __future__ import annotations

from pathlib import Path

from mounts.workspace_fs import InvalidPath, IsSymlink, PathNotFound, clean, directory

__all__ = ["InvalidPath", "IsSymlink", "PathNotFound", "clean", "directory_beneath",
           "workspace"]


def directory_beneath(root: Path, path: str) -> str:
    """Check that `path` is a directory inside the workspace (no symlink on the way); return
    it cleaned."""
    return directory(root, path)


def workspace(bucket: str) -> Path:
    """The bucket's mounted workspace; 409 not_mounted when it is not mounted."""
    from mounts.services import workspace_path

    return workspace_path(bucket)
