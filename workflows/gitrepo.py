"""The workspace's git repository: init, commit everything, restore a tree (via the runner)."""

from __future__ import annotations

from pathlib import Path

from weldr_agent import runner
from workflows import system

GIT_TIMEOUT = 120.0


def git(workspace: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT) -> str:
    result = runner.run(system.git_argv(workspace, *args), timeout=timeout, check=check,
                        env=runner.clean_env(system.git_env()))
    return result.stdout


def repo_ensure(workspace: Path) -> None:
    """Make the workspace a git repository with a first commit, and keep our files out of it."""
    workspace.mkdir(parents=True, exist_ok=True)
    if not (workspace / ".git").exists():
        git(workspace, "init", "-q", "-b", "main")
    exclude = workspace / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    wanted = "\n".join(system.GIT_EXCLUDES) + "\n"
    if not exclude.exists() or exclude.read_text() != wanted:
        exclude.write_text(wanted)
    if not head(workspace):
        git(workspace, "commit", "-q", "--allow-empty", "-m", "Initial commit")


def head(workspace: Path) -> str:
    return git(workspace, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()


def changed_paths(workspace: Path) -> list[str]:
    """Paths that differ from HEAD (added, modified, deleted, untracked)."""
    out = git(workspace, "status", "--porcelain=v1", "-z", "--untracked-files=all")
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


def commit_all(workspace: Path, message: str) -> str | None:
    """Commit every change; the new commit's hash, or None when nothing changed."""
    git(workspace, "add", "-A")
    if not git(workspace, "diff", "--cached", "--name-only").strip():
        return None
    git(workspace, "commit", "-q", "-m", message)
    return head(workspace)


def tree_restore(workspace: Path, commit: str) -> None:
    """Make the work tree and index exactly `commit`'s tree (without moving HEAD)."""
    git(workspace, "read-tree", "--reset", "-u", commit)
    # Files that did not exist at `commit` and are untracked now would survive read-tree.
    git(workspace, "clean", "-fdq")


def discard_changes(workspace: Path) -> None:
    """Back to HEAD: what a failed integration install leaves behind is removed."""
    tree_restore(workspace, "HEAD")
