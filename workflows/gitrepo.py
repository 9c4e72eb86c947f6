"""The workspace's git repository: init, commit everything, restore a tree.

Every git command runs inside the bucket's exec sandbox, as the sandbox user, on a repository
that user owns (commands/services.py: sandbox_run). Whatever the workspace's `.git` holds — hooks,
`core.fsmonitor`, `include.path`, filters, a `.git` swapped for another — can therefore do no
more than code in the sandbox already can. The agent only reads what git prints.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from commands.services import sandbox_run
from workflows import system
from workflows.errors import GitFailed

logger = logging.getLogger("weldr.workflows.git")

GIT_TIMEOUT = 600.0
STDERR_TAIL = 2000


@dataclass(frozen=True)
class Repo:
    """A bucket's workspace: the sandbox to run git in, and where it is on the host."""

    bucket: str
    workspace: Path


def _run(repo: Repo, argv: list[str], *, stdin: bytes | None = None,
         check: bool = True) -> str:
    result = sandbox_run(bucket=repo.bucket, workspace=repo.workspace, argv=argv,
                         env=system.git_env(), timeout=GIT_TIMEOUT, stdin=stdin)
    if check and (result.timed_out or result.exit_code != 0):
        status = "timed out" if result.timed_out else f"exited with {result.exit_code}"
        tail = result.stderr.decode("utf-8", "replace")[-STDERR_TAIL:].strip()
        raise GitFailed(f"git in the sandbox of {repo.bucket!r} {status}: {tail}")
    return result.stdout.decode("utf-8", "replace")


def git(repo: Repo, *args: str, check: bool = True) -> str:
    return _run(repo, system.git_argv(*args), check=check)


def repo_ensure(repo: Repo) -> None:
    """Make the workspace a git repository with a first commit, and keep our files out of it."""
    git_dir_adopt(repo.workspace)
    _run(repo, system.script_argv(system.REPO_ENSURE_SCRIPT), stdin=system.git_excludes())


def head(repo: Repo) -> str:
    return git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()


def changed_paths(repo: Repo) -> list[str]:
    """Paths that differ from HEAD (added, modified, deleted, untracked)."""
    out = git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    paths: list[str] = []
    entries = out.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename carries its old path as the next entry
            index += 1
    return paths


def commit_all(repo: Repo, message: str) -> str | None:
    """Commit every change; the new commit's hash, or None when nothing changed."""
    out = _run(repo, system.script_argv(system.COMMIT_ALL_SCRIPT), stdin=message.encode())
    return out.strip() or None


def tree_restore(repo: Repo, commit: str) -> None:
    """Make the work tree and index exactly `commit`'s tree (without moving HEAD); files that
    did not exist at `commit` and are untracked now are removed too (read-tree keeps them)."""
    if not system.COMMIT_RE.match(commit):
        raise GitFailed(f"Not a commit id: {commit!r}")
    _run(repo, system.script_argv(system.TREE_RESTORE_SCRIPT, commit))


def discard_changes(repo: Repo) -> None:
    """Back to HEAD: what a failed integration install leaves behind is removed."""
    tree_restore(repo, "HEAD")


# --------------------------------------------------------------------------------------------
# Repositories made by older agents (git as root)
# --------------------------------------------------------------------------------------------


def git_dir_adopt(workspace: Path) -> int:
    """Give a root-owned `.git` (made by an agent that ran git as root) to the sandbox user.

    Git in the sandbox refuses a repository it does not own, and re-creating it would lose the
    history that versions point at; so the old repository is handed over in place, once. The
    walk is the only thing the agent does as root on workspace content here, and it is kept to
    what cannot be steered:
    - it starts only when `.git` (opened without following links) is a root-owned directory on
      the workspace's own filesystem: the sandbox user cannot make root-owned directories, so
      that is the old repository;
    - it works through directory descriptors, never re-resolving a path; it descends only into
      root-owned directories on the same device (whose entries the sandbox user cannot add,
      rename or swap) and never follows a symlink (`fchownat(AT_SYMLINK_NOFOLLOW)`);
    - it only changes owners, and only of root-owned entries, children before their directory
      (a directory becomes writable by the sandbox user only after its walk is over);
    - entries with several hard links are left alone (their other names may be elsewhere).
    Returns how many entries changed owner.
    """
    root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(".git", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=root)
        except OSError:
            return 0  # absent, a file or a symlink: not an old repository
        try:
            info = os.fstat(fd)
            if info.st_uid != 0 or info.st_dev != os.fstat(root).st_dev:
                return 0
            changed = _adopt_children(fd, info.st_dev) + 1
            os.fchown(fd, settings.SANDBOX_UID, settings.SANDBOX_UID)
        finally:
            os.close(fd)
    finally:
        os.close(root)
    logger.warning("gave the root-owned .git of %s to uid %d (%d entries)", workspace,
                   settings.SANDBOX_UID, changed)
    return changed


def _adopt_children(directory: int, device: int) -> int:
    changed = 0
    uid = settings.SANDBOX_UID
    for name in os.listdir(directory):
        entry = os.stat(name, dir_fd=directory, follow_symlinks=False)
        if entry.st_uid != 0 or entry.st_dev != device:
            continue
        if stat.S_ISDIR(entry.st_mode):
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=directory)
            try:
                if (os.fstat(child).st_ino, os.fstat(child).st_dev) != (entry.st_ino, device):
                    continue
                changed += _adopt_children(child, device) + 1
                os.fchown(child, uid, uid)
            finally:
                os.close(child)
        elif entry.st_nlink == 1:
            os.chown(name, uid, uid, dir_fd=directory, follow_symlinks=False)
            changed += 1
    return changed
