"""The ground floor of workspace_fs: path checks, openat2 with the no-symlink resolution,
typed errors, and the descriptor helpers the readers and writers share (see __init__.py)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from weldr_agent.errors import APIError, ConflictError, NotFoundError

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
MAX_PATH_BYTES = 4096
MAX_WALK_DEPTH = 64
MAX_REMOVE_DEPTH = 256
# JuiceFS's virtual files at the root of a mount (the `files` layout): never the project's, and
# `.accesslog` blocks a reader forever. Walks skip them, reads refuse them.
JUICEFS_VIRTUAL = frozenset({".accesslog", ".stats", ".config", ".control"})
READ_CHUNK = 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)


class InvalidPath(APIError):
    status_code = 400
    default_code = "invalid_path"
    default_detail = "The path must stay inside the workspace."


class IsSymlink(APIError):
    status_code = 400
    default_code = "is_symlink"
    default_detail = "The path is or passes through a symlink; the agent never follows links."


class PathNotFound(NotFoundError):
    default_code = "not_found"
    default_detail = "No such file or directory in the workspace."


class NotAFile(APIError):
    status_code = 400
    default_code = "not_a_file"
    default_detail = "The path is not a regular file."


class NotADirectory(APIError):
    status_code = 400
    default_code = "not_a_directory"
    default_detail = "The path is not a directory."


class DirectoryNotEmpty(ConflictError):
    default_code = "directory_not_empty"
    default_detail = "The directory is not empty; pass recursive=true to delete it."


@dataclass(frozen=True)
class Entry:
    """One directory entry as lstat sees it (a symlink is a symlink)."""

    name: str
    type: str
    size: int
    mtime: datetime


@dataclass(frozen=True)
class Written:
    size: int
    created: bool
    made_dirs: list[str] = field(default_factory=list)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


# --- paths ---------------------------------------------------------------------------------


def clean(path: str, *, allow_root: bool = True) -> str:
    """The path relative to the workspace root ("" for the root itself), or InvalidPath."""
    if "\x00" in path:
        raise InvalidPath("The path contains a NUL byte.")
    if path.startswith("/"):
        raise InvalidPath("The path must be relative to the workspace, not absolute.")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidPath("The path is too long.")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidPath("The path must not contain `..`.")
    if not parts and not allow_root:
        raise InvalidPath("The path must name a file inside the workspace.")
    return "/".join(parts)


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2(2) beneath `dir_fd`, no symlink or mount crossing; raises OSError like os.open."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE)
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path or "."), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def translate(error: OSError, path: str) -> Exception:
    """The API error for an OSError met while resolving `path` inside the workspace."""
    if error.errno == errno.ELOOP:
        return IsSymlink(f"`{path}` is or passes through a symlink; the agent does not "
                         "follow links in a workspace.")
    if error.errno == errno.EXDEV:
        return InvalidPath(f"`{path}` resolves outside the workspace.")
    if error.errno == errno.ENOENT:
        return PathNotFound(f"`{path}` does not exist in the workspace.")
    if error.errno == errno.ENOTDIR:
        return PathNotFound(f"A parent of `{path}` is not a directory.")
    if error.errno == errno.ENAMETOOLONG:
        return InvalidPath(f"`{path}` is too long.")
    return error


@contextmanager
def root(workspace: Path) -> Iterator[int]:
    """A descriptor of the workspace root, the anchor of every resolution."""
    fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def open_at(dir_fd: int, path: str, flags: int, shown: str, mode: int = 0) -> int:
    try:
        return openat2(dir_fd, path, flags, mode)
    except OSError as error:
        raise translate(error, shown) from None


def typed(dir_fd: int, path: str, shown: str) -> tuple[int, os.stat_result]:
    """An O_PATH descriptor of `path` itself (a final symlink included) and its lstat."""
    fd = open_at(dir_fd, path, os.O_PATH | os.O_NOFOLLOW, shown)
    return fd, os.fstat(fd)


def reopen(path_fd: int, flags: int) -> int:
    """Open the very inode an O_PATH descriptor holds (the agent's own descriptor link)."""
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)


def refuse_link(info: os.stat_result, shown: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise IsSymlink(f"`{shown}` is a symlink; the agent does not follow links in a "
                        "workspace.")


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def directory(workspace: Path, path: str) -> str:
    """Check that `path` is a directory inside the workspace (no link on the way)."""
    path = clean(path)
    with root(workspace) as root_fd:
        try:
            fd, info = typed(root_fd, path, path)
        except PathNotFound:
            raise InvalidPath(f"`{path}` is not a directory in the workspace.") from None
        os.close(fd)
    refuse_link(info, path)
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidPath(f"`{path}` is not a directory in the workspace.")
    return path


def listing(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of an open directory, sorted; vanished entries skipped."""
    found = []
    with os.scandir(dir_fd) as items:
        for item in items:
            try:
                found.append((item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed while we listed
    return sorted(found, key=lambda pair: pair[0])
