"""Pure builders of argv and environment for git and the workspace commands (no subprocess)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

GIT_AUTHOR_NAME = "Weldr Agent"
GIT_AUTHOR_EMAIL = "agent@weldr.local"
# Our own housekeeping never belongs in a version (npm caches, the agent's scratch files), nor do
# JuiceFS's virtual files at the root of a mount (its trash, stats and access log).
# The agent's own files at a workspace root: JuiceFS's virtual files and trash, and the
# markers of a local branch directory (scripts/branch-common.sh), never the project's.
GIT_EXCLUDES = ("node_modules/", ".weldr/", ".npm/", "/.trash/", "/.stats", "/.config",
                "/.accesslog", "/.weldr-*")


def git_argv(workspace: Path, *args: str) -> list[str]:
    """git in `workspace`; the workspace may belong to another uid (a mount), so trust it."""
    return ["git", "-c", f"safe.directory={workspace}", "-c", "core.quotepath=off",
            "-C", str(workspace), *args]


def git_env() -> dict[str, str]:
    """An explicit identity: commits never depend on the machine's git configuration."""
    return {
        "GIT_AUTHOR_NAME": GIT_AUTHOR_NAME, "GIT_AUTHOR_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": GIT_AUTHOR_NAME, "GIT_COMMITTER_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
    }


NOBODY = 65534


def unprivileged_argv(command: str, *, uid: int = NOBODY, gid: int = NOBODY) -> list[str]:
    """`sh -c command` as an unprivileged user (the stand-in until the exec sandbox lands)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
            "--no-new-privs", "sh", "-c", command]


def npm_argv(verb: str, packages: Sequence[str], *, dev: bool = False) -> str:
    """The npm command line (a sh -c string) installing or removing packages."""
    flags = ["--no-audit", "--no-fund", "--ignore-scripts"]
    if dev and verb == "install":
        flags.append("--save-dev")
    quoted = " ".join("'" + p.replace("'", "'\\''") + "'" for p in packages)
    return f"npm {verb} {' '.join(flags)} {quoted}".strip()
