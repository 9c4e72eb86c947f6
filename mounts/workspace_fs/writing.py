"""Writing a workspace: atomic, owned-from-the-start files, directories made by descriptor,
removals that never follow a link (see __init__.py)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from mounts.workspace_fs.core import (
    MAX_REMOVE_DEPTH,
    DirectoryNotEmpty,
    NotADirectory,
    NotAFile,
    PathNotFound,
    Written,
    clean,
    kind_of,
    listing,
    lstat_at,
    open_at,
    openat2,
    refuse_link,
    root,
    translate,
)

# --- writing -------------------------------------------------------------------------------


def _own(fd: int) -> None:
    """The sandbox user owns what the agent makes, so commands and previews can change it."""
    if os.geteuid() == 0:
        os.fchown(fd, settings.SANDBOX_UID, settings.SANDBOX_UID)


def _parent(root_fd: int, parent: str, shown: str) -> tuple[int, list[str]]:
    """A descriptor of the parent directory, made (and owned by the sandbox user) where
    missing; and the directories made, relative to the workspace."""
    fd, made, prefix = os.dup(root_fd), [], ""
    try:
        for part in parent.split("/") if parent else []:
            prefix = f"{prefix}{part}"
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                # RESOLVE_NO_SYMLINKS refuses a symlinked `part` with ELOOP (O_NOFOLLOW would
                # turn that into an ambiguous ENOTDIR).
                child = openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as error:
                if error.errno == errno.ENOTDIR:
                    raise NotADirectory(f"A parent of `{shown}` is not a directory.") from None
                raise translate(error, shown) from None
            os.close(fd)
            fd = child
            if created:
                _own(fd)
                made.append(prefix)
            prefix += "/"
    except BaseException:
        os.close(fd)
        raise
    return fd, made


def _write_all(fd: int, chunks: Iterable[bytes]) -> int:
    size = 0
    for chunk in chunks:
        view = memoryview(chunk)
        size += len(view)
        while view:
            view = view[os.write(fd, view):]
    return size


def write(workspace: Path, path: str, chunks: Iterable[bytes], *,
          only_if_absent: bool = False) -> Written | None:
    """Write the file at `path` atomically; None when `only_if_absent` and the name is taken.

    `chunks` may raise (a size cap): the temporary file is removed and nothing is renamed.
    """
    path = clean(path, allow_root=False)
    parent, _, name = path.rpartition("/")
    with root(workspace) as root_fd:
        dir_fd, made = _parent(root_fd, parent, path)
    try:
        before = lstat_at(dir_fd, name)
        if before is not None:
            refuse_link(before, path)
            if stat.S_ISDIR(before.st_mode):
                raise NotAFile(f"`{path}` is a directory.")
            if only_if_absent:
                return None
        size = _write_temp_then_name(dir_fd, name, chunks, before, path, only_if_absent)
        if size is None:
            return None
        return Written(size, before is None, made)
    finally:
        os.close(dir_fd)


def _write_temp_then_name(dir_fd: int, name: str, chunks: Iterable[bytes],
                          before: os.stat_result | None, shown: str,
                          only_if_absent: bool) -> int | None:
    temp = f".weldr-{secrets.token_hex(6)}.tmp"
    fd = openat2(dir_fd, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        try:
            _own(fd)
            if before is not None and stat.S_ISREG(before.st_mode):
                # A replaced file keeps its permissions (an executable script stays one).
                os.fchmod(fd, stat.S_IMODE(before.st_mode) & 0o777)
            size = _write_all(fd, chunks)
        finally:
            os.close(fd)
        if only_if_absent:
            try:
                # link(2) fails on any existing name, a dangling symlink included.
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
            except FileExistsError:
                return None
            return size
        try:
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            raise NotAFile(f"`{shown}` is a directory.") from None
        temp = ""
        return size
    finally:
        if temp:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass


def remove(workspace: Path, path: str, *, recursive: bool = False,
           directories: bool = True) -> str:
    """Remove a file or a symlink (never what it points to), or a directory; return its kind."""
    path = clean(path, allow_root=False)
    parent, _, name = path.rpartition("/")
    with root(workspace) as root_fd:
        dir_fd = open_at(root_fd, parent, os.O_PATH | os.O_DIRECTORY, path)
    try:
        info = lstat_at(dir_fd, name)
        if info is None:
            raise PathNotFound(f"`{path}` does not exist in the workspace.")
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
        elif not directories:
            raise NotAFile(f"`{path}` is a directory.")
        elif recursive:
            _remove_tree(dir_fd, name, info.st_dev, 0)
        else:
            try:
                os.rmdir(name, dir_fd=dir_fd)
            except OSError as error:
                if error.errno == errno.ENOTEMPTY:
                    raise DirectoryNotEmpty(f"`{path}` is not empty.") from None
                raise
        return kind_of(info.st_mode)
    finally:
        os.close(dir_fd)


def _remove_tree(dir_fd: int, name: str, device: int, depth: int) -> None:
    """Remove the directory `name` of `dir_fd` and all it holds, by descriptor.

    Not shutil.rmtree: it opens each directory by name without O_DIRECTORY|O_NOFOLLOW, so a
    directory swapped for a link to a FIFO between its lstat and its open blocks the agent.
    Here a swapped name fails to open (ELOOP/ENOTDIR) and the removal stops there.
    """
    fd = openat2(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_dev != device or depth >= MAX_REMOVE_DEPTH:
            raise OSError(errno.EXDEV if depth < MAX_REMOVE_DEPTH else errno.ELOOP,
                          "not removed: another filesystem or too deep", name)
        for child, info in listing(fd):
            try:
                if stat.S_ISDIR(info.st_mode):
                    _remove_tree(fd, child, device, depth + 1)
                else:
                    os.unlink(child, dir_fd=fd)
            except FileNotFoundError:
                continue  # removed meanwhile
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
