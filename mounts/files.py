"""The files API's verbs: list, read, write, delete inside a bucket's workspace.

Thin over mounts.workspace_fs, the one door to workspace content: no symlink is followed (a
path that is or passes through one answers 400 `is_symlink`), only regular files are read,
writes are atomic and belong to the sandbox user from the start. This module adds what is the
API's own: the upload size cap, the content type, streaming.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from mounts import workspace_fs
from mounts.workspace_fs import Entry
from weldr_agent.errors import PayloadTooLarge

COPY_CHUNK = 1024 * 1024

__all__ = ["Entry", "OpenFile", "file_chunks", "file_delete", "file_list", "file_open",
           "file_write"]


@dataclass(frozen=True)
class OpenFile:
    fd: int
    size: int
    content_type: str


def file_list(*, workspace: Path, path: str) -> list[Entry]:
    """The entries of a directory (symlinks reported as such, not followed)."""
    return workspace_fs.entries(workspace, path)


def file_open(*, workspace: Path, path: str) -> OpenFile:
    """Open a regular file for reading; the caller streams and closes `fd`."""
    fd, size = workspace_fs.open_file(workspace, path)
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return OpenFile(fd, size, content_type)


async def file_chunks(fd: int) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time, read off the event loop; closes `fd` at the end.

    Async on purpose: Django would load a synchronous iterator whole into memory under ASGI.
    """
    try:
        while chunk := await asyncio.to_thread(os.read, fd, COPY_CHUNK):
            yield chunk
    finally:
        os.close(fd)


def _capped(body: BinaryIO, limit: int) -> Iterator[bytes]:
    """The body's chunks; PayloadTooLarge (and no file) once it passes `limit`."""
    size = 0
    while chunk := body.read(COPY_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The file is larger than FILE_UPLOAD_MAX_BYTES ({limit} bytes).")
        yield chunk


def file_write(*, workspace: Path, path: str, body: BinaryIO, length: int | None) -> int:
    """Write the whole body to `path` atomically; return its size."""
    limit = settings.FILE_UPLOAD_MAX_BYTES
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The file is larger than FILE_UPLOAD_MAX_BYTES ({limit} bytes).")
    written = workspace_fs.write(workspace, path, _capped(body, limit))
    assert written is not None  # only `only_if_absent` writes answer None
    return written.size


def file_delete(*, workspace: Path, path: str, recursive: bool = False) -> None:
    """Remove a file or symlink (never what it points to), or a directory."""
    workspace_fs.remove(workspace, path, recursive=recursive)
