"""The files API's verbs: list, read, write, delete inside a bucket's workspace.

Every path goes through mounts.paths (lexical checks, then openat2 RESOLVE_BENEATH from a
descriptor of the workspace root), and every later step works on descriptors or on plain names
relative to a confined directory descriptor, so a symlink swapped in mid-request cannot lead
outside. Writes are atomic (a temporary file in the same directory, then rename) and go through
the mount like any other write; files and directories made here belong to the sandbox's uid so
that commands and previews can change them.
"""

from __future__ import annotations

import asyncio
import errno
import mimetypes
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from mounts import paths
from weldr_agent.errors import APIError, PayloadTooLarge

COPY_CHUNK = 1024 * 1024


class NotAFile(APIError):
    status_code = 400
    default_code = "not_a_file"
    default_detail = "The path is a directory, not a file."


class NotADirectory(APIError):
    status_code = 400
    default_code = "not_a_directory"
    default_detail = "The path is not a directory."


class DirectoryNotEmpty(APIError):
    status_code = 409
    default_code = "directory_not_empty"
    default_detail = "The directory is not empty; pass recursive=true to delete it."


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    size: int
    mtime: datetime


@dataclass(frozen=True)
class OpenFile:
    fd: int
    size: int
    content_type: str


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def file_list(*, workspace: Path, path: str) -> list[Entry]:
    """The entries of a directory (symlinks reported as such, not followed)."""
    path = paths.clean(path)
    fd = paths.open_beneath(workspace, path, os.O_RDONLY | os.O_DIRECTORY
                            ) if _is_dir(workspace, path) else None
    if fd is None:
        raise NotADirectory(f"`{path}` is not a directory.")
    entries = []
    try:
        with os.scandir(fd) as listing:
            for item in listing:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while we listed
                entries.append(Entry(item.name, _kind(info.st_mode), info.st_size,
                                     datetime.fromtimestamp(info.st_mtime, tz=UTC)))
    finally:
        os.close(fd)
    return sorted(entries, key=lambda entry: entry.name)


def _is_dir(workspace: Path, path: str) -> bool:
    fd = paths.open_beneath(workspace, path, os.O_PATH)
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def file_open(*, workspace: Path, path: str) -> OpenFile:
    """Open a regular file for reading; the caller streams and closes `fd`."""
    path = paths.clean(path, allow_root=False)
    fd = paths.open_beneath(workspace, path, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotAFile(f"`{path}` is not a regular file.")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return OpenFile(fd, info.st_size, content_type)


async def file_chunks(fd: int) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time, read off the event loop; closes `fd` at the end.

    Async on purpose: Django would load a synchronous iterator whole into memory under ASGI.
    """
    try:
        while chunk := await asyncio.to_thread(os.read, fd, COPY_CHUNK):
            yield chunk
    finally:
        os.close(fd)


def _parent(workspace: Path, path: str) -> tuple[int, str]:
    """A descriptor of the (created if missing) parent directory, and the final name."""
    parent, _, name = path.rpartition("/")
    root = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.dup(root)
        for part in parent.split("/") if parent else []:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                os.chown(part, settings.SANDBOX_UID, settings.SANDBOX_UID, dir_fd=fd,
                         follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                child = paths.openat2(fd, part, os.O_PATH | os.O_DIRECTORY)
            except OSError as error:
                os.close(fd)
                if error.errno == errno.ENOTDIR:
                    raise NotADirectory(f"A parent of `{path}` is not a directory.") from None
                raise paths.translate(error, path) from None
            os.close(fd)
            fd = child
        return fd, name
    finally:
        os.close(root)


def file_write(*, workspace: Path, path: str, body: BinaryIO, length: int | None) -> int:
    """Write the whole body to `path` atomically; return its size."""
    path = paths.clean(path, allow_root=False)
    limit = settings.FILE_UPLOAD_MAX_BYTES
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The file is larger than FILE_UPLOAD_MAX_BYTES ({limit} bytes).")
    dir_fd, name = _parent(workspace, path)
    target = _link_target(workspace, dir_fd, name, path)
    if target is not None:
        # Writing through a symlink writes what it points to (inside the workspace only).
        os.close(dir_fd)
        return file_write(workspace=workspace, path=target, body=body, length=length)
    temp = f".{name}.weldr-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                     dir_fd=dir_fd)
        try:
            size = _copy(body, fd, limit)
            os.fchown(fd, settings.SANDBOX_UID, settings.SANDBOX_UID)
            _keep_mode(dir_fd, name, fd)
        finally:
            os.close(fd)
        try:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            raise NotAFile(f"`{path}` is a directory.") from None
        temp = ""
        return size
    finally:
        if temp:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        os.close(dir_fd)


def _link_target(workspace: Path, dir_fd: int, name: str, path: str) -> str | None:
    """When `name` is a symlink: its target relative to the workspace; InvalidPath when the
    target is outside (or missing); None when `name` is not a symlink."""
    try:
        if not stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return None
        fd = paths.openat2(dir_fd, name, os.O_PATH)
    except FileNotFoundError:
        if os.path.lexists(f"/proc/self/fd/{dir_fd}/{name}"):
            raise paths.InvalidPath(f"`{path}` is a symlink to nothing.") from None
        return None
    except OSError as error:
        raise paths.translate(error, path) from None
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)
    return str(real.relative_to(workspace.resolve()))


def _keep_mode(dir_fd: int, name: str, fd: int) -> None:
    """A replaced file keeps its permissions (an executable script stays executable)."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(info.st_mode):
        os.fchmod(fd, stat.S_IMODE(info.st_mode))


def _copy(body: BinaryIO, fd: int, limit: int) -> int:
    size = 0
    while chunk := body.read(COPY_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"The file is larger than FILE_UPLOAD_MAX_BYTES ({limit} bytes).")
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    return size


def _refuse_link_out(dir_fd: int, name: str, path: str) -> None:
    """A symlink that resolves outside the workspace is refused like any such path."""
    try:
        os.close(paths.openat2(dir_fd, name, os.O_PATH))
    except OSError as error:
        if error.errno in (errno.EXDEV, errno.ELOOP):
            raise paths.translate(error, path) from None


def file_delete(*, workspace: Path, path: str, recursive: bool = False) -> None:
    """Remove a file or symlink (never what it points to), or a directory."""
    path = paths.clean(path, allow_root=False)
    parent, _, name = path.rpartition("/")
    dir_fd = paths.open_beneath(workspace, parent, os.O_PATH | os.O_DIRECTORY)
    try:
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise paths.PathNotFound(f"`{path}` does not exist in the workspace.") from None
        if stat.S_ISLNK(info.st_mode):
            _refuse_link_out(dir_fd, name, path)
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
        elif recursive:
            # rmtree with dir_fd works on descriptors: it never follows a symlink out.
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError as error:
                if error.errno == errno.ENOTEMPTY:
                    raise DirectoryNotEmpty(f"`{path}` is not empty.") from None
                raise
    finally:
        os.close(dir_fd)
