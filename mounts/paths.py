"""Paths inside a workspace, resolved so that nothing can point outside it.

Lexical checks first (absolute paths, `..`, NUL bytes are refused outright), then the kernel
resolves the rest with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to a descriptor
of the workspace root: a symlink (or a rename racing with us) that would leave the workspace
fails with EXDEV instead of being followed. No check-then-open window.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

from weldr_agent.errors import APIError, NotFoundError

SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
MAX_PATH_BYTES = 4096

_libc = ctypes.CDLL(None, use_errno=True)


class InvalidPath(APIError):
    status_code = 400
    default_code = "invalid_path"
    default_detail = "The path must stay inside the workspace."


class PathNotFound(NotFoundError):
    default_code = "not_found"
    default_detail = "No such file or directory in the workspace."


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


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
    """openat2(2) confined beneath `dir_fd`; raises OSError like os.open."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path or "."), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def translate(error: OSError, path: str) -> Exception:
    """The API error for an OSError met while resolving `path` inside the workspace."""
    if error.errno in (errno.EXDEV, errno.ELOOP):
        return InvalidPath(f"`{path}` resolves outside the workspace.")
    if error.errno == errno.ENOENT:
        return PathNotFound(f"`{path}` does not exist in the workspace.")
    if error.errno == errno.ENOTDIR:
        return PathNotFound(f"A parent of `{path}` is not a directory.")
    if error.errno == errno.ENAMETOOLONG:
        return InvalidPath(f"`{path}` is too long.")
    return error


def open_beneath(root: Path, path: str, flags: int, mode: int = 0) -> int:
    """Open `path` (already cleaned) beneath the workspace `root`, with typed errors."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return openat2(root_fd, path, flags, mode)
    except OSError as error:
        raise translate(error, path) from None
    finally:
        os.close(root_fd)


def directory_beneath(root: Path, path: str) -> str:
    """Check that `path` is a directory inside the workspace; return it cleaned."""
    path = clean(path)
    try:
        fd = open_beneath(root, path, os.O_PATH)
    except PathNotFound:
        raise InvalidPath(f"`{path}` is not a directory in the workspace.") from None
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise InvalidPath(f"`{path}` is not a directory in the workspace.")
    finally:
        os.close(fd)
    return path


def workspace(bucket: str) -> Path:
    """The bucket's mounted workspace; 409 not_mounted when it is not mounted."""
    from mounts.services import workspace_path

    return workspace_path(bucket)
