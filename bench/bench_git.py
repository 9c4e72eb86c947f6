"""Benchmark: the agent's git as root on the host (before) against git in the exec sandbox (now).

    .venv/bin/python bench/bench_git.py [--files 1000] [--runs 5]

Makes two identical workspaces of `--files` files (local disk, under a temporary directory),
one whose repository is driven the old way — `git -C ws …` run by the agent as root on the host
(the baseline's tree is root's own), the commands `workflows/gitrepo.py` ran before — and one
driven by `workflows/gitrepo.py` as it is now: every git command inside the bucket's exec
sandbox (a real runc container started by this process), as the sandbox user. Then,
interleaved, `--runs` times:

1. finalize: every file changed, then what a run's finalizing step does (status, then add +
   commit of all of them);
2. revert: what POST /revert does (repo_ensure, the previous commit's tree restored, commit).

Prints min / median per step and the after/before ratio, with the load average (the machine
may be shared: compare within one run).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PARSER = argparse.ArgumentParser(description=__doc__.splitlines()[0])
PARSER.add_argument("--files", type=int, default=1000)
PARSER.add_argument("--runs", type=int, default=5)
ARGS = PARSER.parse_args()  # before anything is made: --help leaves nothing behind
ROOT = Path(tempfile.mkdtemp(prefix="weldr-bench-git-"))
os.environ.update({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                   "WELDR_ENV_VOL": str(ROOT / "env"), "WELDR_RUNTIME_DIR": str(ROOT / "run"),
                   "WELDR_INSTANCE_ID": secrets.token_hex(3), "LOG_LEVEL": "WARNING"})

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

# The sandbox's network namespace takes its bucket's egress policy from the state database.
call_command("migrate", database="default", verbosity=0)

from commands.services import exec_bucket_cleanup  # noqa: E402
from sandbox import network  # noqa: E402
from weldr_agent import runner  # noqa: E402
from workflows import gitrepo, system  # noqa: E402


class RootGit:
    """The old way, for the baseline only: git as root on the host, on a tree this benchmark made
    as root. Never do this on a workspace (docs/security.md says why)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.env = runner.clean_env({
            "GIT_AUTHOR_NAME": system.GIT_AUTHOR_NAME, "GIT_AUTHOR_EMAIL": system.GIT_AUTHOR_EMAIL,
            "GIT_COMMITTER_NAME": system.GIT_AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": system.GIT_AUTHOR_EMAIL,
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"})

    def git(self, *args: str, check: bool = True) -> str:
        argv = ["git", "-c", "core.quotepath=off", "-C", str(self.workspace), *args]
        return runner.run(argv, timeout=600, check=check, env=self.env).stdout

    def repo_ensure(self) -> None:
        if not (self.workspace / ".git").exists():
            self.git("init", "-q", "-b", "main")
        exclude = self.workspace / ".git" / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        wanted = system.git_excludes().decode()
        if not exclude.exists() or exclude.read_text() != wanted:
            exclude.write_text(wanted)
        if not self.head():
            self.git("commit", "-q", "--allow-empty", "-m", "Initial commit")

    def head(self) -> str:
        return self.git("rev-parse", "--verify", "-q", "HEAD", check=False).strip()

    def changed_paths(self) -> int:
        return self.git("status", "--porcelain=v1", "-z", "--untracked-files=all").count("\0")

    def commit_all(self, message: str) -> str | None:
        self.git("add", "-A")
        if not self.git("diff", "--cached", "--name-only").strip():
            return None
        self.git("commit", "-q", "-m", message)
        return self.head()

    def tree_restore(self, commit: str) -> None:
        self.git("read-tree", "--reset", "-u", commit)
        self.git("clean", "-fdq")


class SandboxGit:
    """workflows/gitrepo.py as the agent uses it now."""

    def __init__(self, bucket: str, workspace: Path) -> None:
        self.repo = gitrepo.Repo(bucket=bucket, workspace=workspace)

    def repo_ensure(self) -> None:
        gitrepo.repo_ensure(self.repo)

    def head(self) -> str:
        return gitrepo.head(self.repo)

    def changed_paths(self) -> int:
        return len(gitrepo.changed_paths(self.repo))

    def commit_all(self, message: str) -> str | None:
        return gitrepo.commit_all(self.repo, message)

    def tree_restore(self, commit: str) -> None:
        gitrepo.tree_restore(self.repo, commit)


def write_files(workspace: Path, count: int, tag: str, uid: int) -> None:
    """`count` files of ~1 KB in 20 directories, each holding `tag` (so every one changes)."""
    for index in range(count):
        path = workspace / f"src/d{index % 20:02d}/file{index:05d}.js"
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
            os.chown(path.parent, uid, uid)
        path.write_text(f"// {tag} {index}\n" + "export const x = 1;\n" * 48)
        os.chown(path, uid, uid)


def finalize(git: RootGit | SandboxGit, files: int, message: str) -> None:
    """A run's finalizing step: the changed paths (for the description), then the commit."""
    changed = git.changed_paths()
    assert changed == files, (type(git).__name__, changed)
    assert git.commit_all(message)


def revert(git: RootGit | SandboxGit, commit: str, message: str) -> None:
    """POST /revert: the repository ensured, the commit's tree restored, a new commit."""
    git.repo_ensure()
    git.tree_restore(commit)
    assert git.commit_all(message)


def timed(action: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def main() -> None:
    args = ARGS
    bucket = f"bench-git-{secrets.token_hex(3)}"
    before_ws, after_ws = ROOT / "before", ROOT / "after"
    uid = settings.SANDBOX_UID
    for workspace in (before_ws, after_ws):
        workspace.mkdir(parents=True)
    os.chown(after_ws, uid, uid)
    targets = {"before (root, host)": (RootGit(before_ws), before_ws, 0),
               "after (sandbox)": (SandboxGit(bucket, after_ws), after_ws, uid)}
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for git, workspace, owner in targets.values():
            git.repo_ensure()
            write_files(workspace, args.files, "v0", owner)
            git.commit_all("v0")
        for run in range(args.runs):
            for name, (git, workspace, owner) in targets.items():
                previous = git.head()
                write_files(workspace, args.files, f"run{run}", owner)

                times.setdefault((name, "finalize"), []).append(
                    timed(finalize, git, args.files, f"run {run}"))
                times.setdefault((name, "revert"), []).append(
                    timed(revert, git, previous, f"revert {run}"))
        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
              f"{args.files} files changed per step, {args.runs} runs, local disk")
        print(f"{'step':<10} {'target':<22} {'min s':>8} {'median s':>9}")
        for step in ("finalize", "revert"):
            medians = {}
            for name in targets:
                values = times[(name, step)]
                medians[name] = statistics.median(values)
                print(f"{step:<10} {name:<22} {min(values):8.3f} {medians[name]:9.3f}")
            before, after = medians.values()
            print(f"{step:<10} {'after / before':<22} {'':>8} {after / before:9.2f}")
    finally:
        exec_bucket_cleanup(bucket)
        network.netns_pool.shutdown()
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
