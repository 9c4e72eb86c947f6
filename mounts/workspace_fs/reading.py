"""Reading a workspace: regular files only, directory listings and walks that never follow a
symlink (see __init__.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mounts.workspace_fs.core import (
    JUICEFS_VIRTUAL,
    MAX_WALK_DEPTH,
    READ_CHUNK,
    Entry,
    NotADirectory,
    NotAFile,
    PathNotFound,
    clean,
    kind_of,
    listing,
    open_at,
    openat2,
    refuse_link,
    reopen,
    root,
    typed,
)

# --- reading -------------------------------------------------------------------------------


def open_file(workspace: Path, path: str) -> tuple[int, int]:
    """A readable descriptor of the regular file at `path`, and its size; the caller closes.

    FIFOs, devices and sockets are refused by type before anything opens them.
    """
    path = clean(path, allow_root=False)
    if path in JUICEFS_VIRTUAL:
        raise NotAFile(f"`{path}` is a virtual file of the filesystem, not the project's.")
    fd, info = _open_as(workspace, path, stat.S_ISREG,
                        NotAFile(f"`{path}` is not a regular file."), os.O_RDONLY | os.O_NONBLOCK)
    return fd, info.st_size


def _read_fd(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0 and (chunk := os.read(fd, min(left, READ_CHUNK))):
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read(workspace: Path, path: str, *, limit: int) -> bytes:
    """At most `limit` bytes of the regular file at `path`."""
    fd, _ = open_file(workspace, path)
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


def read_if_present(workspace: Path, path: str, *, limit: int) -> bytes | None:
    """Like read(), None when nothing has the name; a symlink or directory is refused."""
    try:
        return read(workspace, path, limit=limit)
    except PathNotFound:
        return None


def _open_as(workspace: Path, path: str, is_kind: Callable[[int], bool], refusal: Exception,
             flags: int) -> tuple[int, os.stat_result]:
    """Open `path` only if it is of the kind `is_kind` says (never a link): its type comes from
    an O_PATH descriptor (opening that opens no FIFO or device), then that inode is reopened."""
    with root(workspace) as root_fd:
        path_fd, info = typed(root_fd, path, path)
        try:
            refuse_link(info, path)
            if not is_kind(info.st_mode):
                raise refusal
            return reopen(path_fd, flags), info
        finally:
            os.close(path_fd)


def entries(workspace: Path, path: str) -> list[Entry]:
    """The entries of a directory, sorted by name; symlinks reported as such, never followed."""
    path = clean(path)
    fd, _ = _open_as(workspace, path, stat.S_ISDIR,
                     NotADirectory(f"`{path}` is not a directory."), os.O_RDONLY | os.O_DIRECTORY)
    try:
        return [Entry(name, kind_of(st.st_mode), st.st_size,
                      datetime.fromtimestamp(st.st_mtime, tz=UTC))
                for name, st in listing(fd)]
    finally:
        os.close(fd)



# --- walking and searching -----------------------------------------------------------------


def _walk_fd(dir_fd: int, prefix: str, device: int, depth: int, skip: frozenset[str]
             ) -> Iterator[tuple[str, str, int, os.stat_result]]:
    """(relative path, name, parent descriptor, lstat) under an open directory, depth first.

    The parent descriptor is valid until the generator resumes. Directories are entered by
    descriptor with O_NOFOLLOW and only on the root's device; symlinks are yielded, not entered.
    """
    for name, info in listing(dir_fd):
        if name in skip or (not prefix and name in JUICEFS_VIRTUAL):
            continue
        relative = f"{prefix}{name}"
        yield relative, name, dir_fd, info
        if not stat.S_ISDIR(info.st_mode) or info.st_dev != device or depth >= MAX_WALK_DEPTH:
            continue
        try:
            child = openat2(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # replaced (by a symlink, a file) or removed since the listing
        try:
            if os.fstat(child).st_dev == device:
                yield from _walk_fd(child, relative + "/", device, depth + 1, skip)
        finally:
            os.close(child)


@contextmanager
def _walk_base(workspace: Path, path: str) -> Iterator[tuple[int | None, os.stat_result, int]]:
    """The base of a walk or search: (directory fd or None for a file, its lstat, root fd)."""
    with root(workspace) as root_fd:
        path_fd, info = typed(root_fd, path, path or ".")
        try:
            refuse_link(info, path)
            fd = reopen(path_fd, os.O_RDONLY | os.O_DIRECTORY) if stat.S_ISDIR(
                info.st_mode) else None
        finally:
            os.close(path_fd)
        try:
            yield fd, info, root_fd
        finally:
            if fd is not None:
                os.close(fd)


def walk(workspace: Path, path: str = "", *, skip: Iterable[str] = ()
         ) -> Iterator[tuple[str, str]]:
    """(path relative to the workspace, kind) of everything under the directory `path`."""
    path = clean(path)
    with _walk_base(workspace, path) as (fd, info, _):
        if fd is None:
            raise NotADirectory(f"`{path}` is not a directory.")
        prefix = f"{path}/" if path else ""
        for relative, _name, _parent, entry in _walk_fd(fd, prefix, info.st_dev, 0,
                                                        frozenset(skip)):
            yield relative, kind_of(entry.st_mode)


def _read_at(dir_fd: int, name: str, limit: int) -> bytes | None:
    """The first `limit` bytes of `name` in `dir_fd` if it is (still) a regular file."""
    try:
        path_fd = openat2(dir_fd, name, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(path_fd).st_mode):
            return None
        fd = reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK)
    finally:
        os.close(path_fd)
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


def texts(workspace: Path, path: str = "", *, skip: Iterable[str] = (), limit: int
          ) -> Iterator[tuple[str, bytes]]:
    """(relative path, first `limit` bytes) of each regular file under `path` (or of the file
    `path` itself): the walk above, reading only regular files, never through a link."""
    path = clean(path)
    with _walk_base(workspace, path) as (fd, info, root_fd):
        if fd is None:
            if stat.S_ISREG(info.st_mode):
                parent, _, name = path.rpartition("/")
                parent_fd = open_at(root_fd, parent, os.O_PATH | os.O_DIRECTORY, path)
                try:
                    data = _read_at(parent_fd, name, limit)
                finally:
                    os.close(parent_fd)
                if data is not None:
                    yield path, data
            return
        prefix = f"{path}/" if path else ""
        for relative, name, parent_fd, entry in _walk_fd(fd, prefix, info.st_dev, 0,
                                                         frozenset(skip)):
            if stat.S_ISREG(entry.st_mode):
                data = _read_at(parent_fd, name, limit)
                if data is not None:
                    yield relative, data
