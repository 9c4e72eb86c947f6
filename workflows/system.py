"""Pure builders of argv and environment for git and the workspace commands (no subprocess).

Git runs inside the bucket's exec sandbox as its user (workflows/gitrepo.py): these builders
describe the command as the sandbox sees it (the workspace at /workspace).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sandbox.bucket_spec import WORKSPACE

GIT_AUTHOR_NAME = "Weldr Agent"
GIT_AUTHOR_EMAIL = "agent@weldr.local"
# Never the project's: dependencies, npm caches, and JuiceFS's virtual files and trash at the
# root of a `files` workspace. (A local branch directory's markers live beside it, not in it.)
GIT_EXCLUDES = ("node_modules/", ".weldr/", ".npm/", "/.trash/", "/.stats", "/.config",
                "/.accesslog", "/.control")
# Defence in depth only: git runs in the sandbox as its user, so a hook or fsmonitor planted in
# .git can at most do what the sandbox can already do. These keep the agent's git predictable
# (config from the environment outranks the repository's own).
GIT_FORCED_CONFIG = (("core.fsmonitor", "false"), ("core.hooksPath", "/dev/null"),
                     ("core.quotepath", "off"))
COMMIT_RE = re.compile(r"^(?:[0-9a-f]{7,64}|HEAD)$")

# One round trip each; the agent parses what they print. Content arrives on stdin.
REPO_ENSURE_SCRIPT = """set -eu
[ -d .git ] || git init -q -b main
mkdir -p .git/info
cat > .git/info/exclude
git rev-parse --verify -q HEAD >/dev/null || git commit -q --allow-empty -m 'Initial commit'
"""
COMMIT_ALL_SCRIPT = """set -eu
git add -A
git diff --cached --quiet && exit 0
git commit -q --no-verify -F -
git rev-parse --verify HEAD
"""
TREE_RESTORE_SCRIPT = """set -eu
git read-tree --reset -u "$1"
git clean -fdq
"""


def git_argv(*args: str) -> list[str]:
    """git in the sandbox's workspace (the environment says which repository and work tree)."""
    return ["git", *args]


def script_argv(script: str, *args: str) -> list[str]:
    """`sh -c script sh args...`: the arguments arrive as "$1"..., never spliced into text."""
    return ["/bin/sh", "-c", script, "sh", *args]


def git_env() -> dict[str, str]:
    """An explicit identity and repository: commits never depend on machine or repo settings.

    GIT_DIR and GIT_WORK_TREE outrank a planted `core.worktree`; GIT_CONFIG_* entries act like
    `git -c` for every git the command starts (sh scripts included).
    """
    env = {
        "GIT_AUTHOR_NAME": GIT_AUTHOR_NAME, "GIT_AUTHOR_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": GIT_AUTHOR_NAME, "GIT_COMMITTER_EMAIL": GIT_AUTHOR_EMAIL,
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0", "HOME": "/tmp",
        "GIT_DIR": f"{WORKSPACE}/.git", "GIT_WORK_TREE": WORKSPACE,
        "GIT_CONFIG_COUNT": str(len(GIT_FORCED_CONFIG)),
    }
    for index, (key, value) in enumerate(GIT_FORCED_CONFIG):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def git_excludes() -> bytes:
    return ("\n".join(GIT_EXCLUDES) + "\n").encode()


def npm_argv(verb: str, packages: Sequence[str], *, dev: bool = False) -> str:
    """The npm command line (a sh -c string) installing or removing packages."""
    flags = ["--no-audit", "--no-fund", "--ignore-scripts"]
    if dev and verb == "install":
        flags.append("--save-dev")
    quoted = " ".join("'" + p.replace("'", "'\\''") + "'" for p in packages)
    return f"npm {verb} {' '.join(flags)} {quoted}".strip()
