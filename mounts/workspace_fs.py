"""The only door to a workspace's content: every read, write, listing, walk, search, edit and
delete the agent does inside a workspace goes through this module.

Why one module, and why here: the mounts app already answers "where is a bucket's workspace";
this module answers "how may the agent, running as root, touch what is inside it". The files
API (mounts.files), the model's tools (workflows.tools) and integration installs
(workflows.integrations.services) call these functions; none of them opens a workspace path
itself. It replaces the old mounts.paths/mounts.files pair, which followed symlinks that stayed
inside the workspace. Everything in a workspace is written by code we do not trust: its names,
its symlinks, its FIFOs, and it can change them while we work (docs/security.md).

How each rule is kept:
- A path is checked lexically (relative, no `..`, no NUL), then resolved by the kernel with
  openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
  from a descriptor of the workspace root. A symlink anywhere on the way fails with ELOOP
  (`is_symlink`), a mount crossing with EXDEV; a directory swapped for a symlink mid-operation
  fails the same way. Nothing is resolved twice: later steps use descriptors and single names.
- A symlink is never read or written through: reads answer `is_symlink`, listings and walks
  report it as a symlink, a delete removes the link itself.
- Content is read from regular files only: the type comes from an O_PATH descriptor (opening
  one never opens a FIFO or a device), then that same inode is reopened for reading.
- Writes create a temporary file (O_CREAT|O_EXCL|O_NOFOLLOW) in the parent directory's
  descriptor, fchown it to the sandbox user, then renameat it onto the name in that same
  descriptor: the file is the sandbox user's before it has its name, and no half-written file
  is ever visible. New directories: mkdirat, then fchown on the directory's own descriptor.
  "Create only when absent" links the temporary file to the name (EEXIST, even for a dangling
  symlink): no exists()-then-write window.
- Walks recurse over descriptors opened O_DIRECTORY|O_NOFOLLOW, stay on the root's device and
  are bounded in depth.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

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


def _openat2(dir_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """openat2(2) beneath `dir_fd`, no symlink or mount crossing; raises OSError like os.open."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE)
    fd = _libc.syscall(SYS_OPENAT2, dir_fd, os.fsencode(path or "."), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def _translate(error: OSError, path: str) -> Exception:
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
def _root(workspace: Path) -> Iterator[int]:
    """A descriptor of the workspace root, the anchor of every resolution."""
    fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _open(dir_fd: int, path: str, flags: int, shown: str, mode: int = 0) -> int:
    try:
        return _openat2(dir_fd, path, flags, mode)
    except OSError as error:
        raise _translate(error, shown) from None


def _typed(dir_fd: int, path: str, shown: str) -> tuple[int, os.stat_result]:
    """An O_PATH descriptor of `path` itself (a final symlink included) and its lstat."""
    fd = _open(dir_fd, path, os.O_PATH | os.O_NOFOLLOW, shown)
    return fd, os.fstat(fd)


def _reopen(path_fd: int, flags: int) -> int:
    """Open the very inode an O_PATH descriptor holds (the agent's own descriptor link)."""
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC | os.O_NOCTTY)


def _refuse_link(info: os.stat_result, shown: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise IsSymlink(f"`{shown}` is a symlink; the agent does not follow links in a "
                        "workspace.")


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
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
    with _root(workspace) as root_fd:
        try:
            fd, info = _typed(root_fd, path, path)
        except PathNotFound:
            raise InvalidPath(f"`{path}` is not a directory in the workspace.") from None
        os.close(fd)
    _refuse_link(info, path)
    if not stat.S_ISDIR(info.st_mode):
        raise InvalidPath(f"`{path}` is not a directory in the workspace.")
    return path


# --- reading -------------------------------------------------------------------------------


def open_file(workspace: Path, path: str) -> tuple[int, int]:
    """A readable descriptor of the regular file at `path`, and its size; the caller closes.

    FIFOs, devices and sockets are refused by type before anything opens them.
    """
    path = clean(path, allow_root=False)
    if path in JUICEFS_VIRTUAL:
        raise NotAFile(f"`{path}` is a virtual file of the filesystem, not the project's.")
    with _root(workspace) as root_fd:
        path_fd, info = _typed(root_fd, path, path)
        try:
            _refuse_link(info, path)
            if not stat.S_ISREG(info.st_mode):
                raise NotAFile(f"`{path}` is not a regular file.")
            fd = _reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK)
        finally:
            os.close(path_fd)
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


def entries(workspace: Path, path: str) -> list[Entry]:
    """The entries of a directory, sorted by name; symlinks reported as such, never followed."""
    path = clean(path)
    with _root(workspace) as root_fd:
        path_fd, info = _typed(root_fd, path, path)
        try:
            _refuse_link(info, path)
            if not stat.S_ISDIR(info.st_mode):
                raise NotADirectory(f"`{path}` is not a directory.")
            fd = _reopen(path_fd, os.O_RDONLY | os.O_DIRECTORY)
        finally:
            os.close(path_fd)
    try:
        return [Entry(name, kind_of(st.st_mode), st.st_size,
                      datetime.fromtimestamp(st.st_mtime, tz=UTC))
                for name, st in _listing(fd)]
    finally:
        os.close(fd)


def _listing(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of an open directory, sorted; vanished entries skipped."""
    found = []
    with os.scandir(dir_fd) as listing:
        for item in listing:
            try:
                found.append((item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed while we listed
    return sorted(found, key=lambda pair: pair[0])


# --- walking and searching -----------------------------------------------------------------


def _walk_fd(dir_fd: int, prefix: str, device: int, depth: int, skip: frozenset[str]
             ) -> Iterator[tuple[str, str, int, os.stat_result]]:
    """(relative path, name, parent descriptor, lstat) under an open directory, depth first.

    The parent descriptor is valid until the generator resumes. Directories are entered by
    descriptor with O_NOFOLLOW and only on the root's device; symlinks are yielded, not entered.
    """
    for name, info in _listing(dir_fd):
        if name in skip or (not prefix and name in JUICEFS_VIRTUAL):
            continue
        relative = f"{prefix}{name}"
        yield relative, name, dir_fd, info
        if not stat.S_ISDIR(info.st_mode) or info.st_dev != device or depth >= MAX_WALK_DEPTH:
            continue
        try:
            child = _openat2(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
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
    with _root(workspace) as root_fd:
        path_fd, info = _typed(root_fd, path, path or ".")
        try:
            _refuse_link(info, path)
            fd = _reopen(path_fd, os.O_RDONLY | os.O_DIRECTORY) if stat.S_ISDIR(
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
        path_fd = _openat2(dir_fd, name, os.O_PATH | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(path_fd).st_mode):
            return None
        fd = _reopen(path_fd, os.O_RDONLY | os.O_NONBLOCK)
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
                parent_fd = _open(root_fd, parent, os.O_PATH | os.O_DIRECTORY, path)
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
                child = _openat2(fd, part, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as error:
                if error.errno == errno.ENOTDIR:
                    raise NotADirectory(f"A parent of `{shown}` is not a directory.") from None
                raise _translate(error, shown) from None
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
    with _root(workspace) as root_fd:
        dir_fd, made = _parent(root_fd, parent, path)
    try:
        before = _lstat(dir_fd, name)
        if before is not None:
            _refuse_link(before, path)
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
    fd = _openat2(dir_fd, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
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
    with _root(workspace) as root_fd:
        dir_fd = _open(root_fd, parent, os.O_PATH | os.O_DIRECTORY, path)
    try:
        info = _lstat(dir_fd, name)
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
    fd = _openat2(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.fstat(fd).st_dev != device or depth >= MAX_REMOVE_DEPTH:
            raise OSError(errno.EXDEV if depth < MAX_REMOVE_DEPTH else errno.ELOOP,
                          "not removed: another filesystem or too deep", name)
        for child, info in _listing(fd):
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
