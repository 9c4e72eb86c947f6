"""Attacks on the agent's git, planted from inside a real exec sandbox (POST /exec, uid 1000).

Each attack first does what a reviewer did: rename the workspace's `.git` away and copy it back
as the sandbox's own (so it can write `.git/config` whoever made the repository), then plants
one trick. The agent's git is then triggered three ways — a workflow run's finalize, POST
/revert, POST /install-integrations — and after each the host is checked: the marker the trick
writes outside the workspace must not exist. Whatever did run must have run as the sandbox user
inside the sandbox (a marker written inside the workspace is owned by uid 1000).
"""

from __future__ import annotations

import os
import secrets
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.workflows.conftest import (
    Agent,
    module_agent_started,
    unmount_all,
    world_readable_dir,
    write_script,
)
from weldr_agent import runner

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"),
              pytest.mark.timeout(600)]

SANDBOX_UID = 1000
# The repository is renamed within the workspace root (moving a directory to another parent
# needs write access to the directory itself); /.weldr-* is excluded from every version.
SWAP = "mv .git .weldr-git-away && cp -R .weldr-git-away .git"


@pytest.fixture(scope="module")
def scripts() -> Iterator[Path]:
    with world_readable_dir("wf-scripts-") as directory:
        yield directory


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, scripts: Path) -> Iterator[Agent]:
    """One agent (the workflow tests' kind: scripted model, local workspaces, a PostgreSQL
    database of its own) for the module: every test makes its own project, branch and bucket,
    so none needs a fresh process — an agent start per test cost more than the attack. Its warm
    pool stays on: a test here starts a preview, on the path production takes."""
    with module_agent_started(tmp_path_factory.mktemp("git-agent"), scripts,
                              PREVIEW_WARM_POOL=str(settings.PREVIEW_WARM_POOL)) as started:
        yield started


@pytest.fixture(autouse=True)
def _unmounted_after(agent: Agent) -> Iterator[None]:
    """Each test's bucket is unmounted after it: the shared agent mounts MAX_MOUNTS at most."""
    yield
    unmount_all(agent)


def run_script(scripts: Path, name: str, path: str, content: str) -> str:
    return write_script(scripts, name, [
        {"text": f"1. Write {path}"},
        {"tool_calls": [{"name": "write_file", "arguments": {"path": path, "content": content}}]},
        {"text": f"Wrote {path}."},
    ])


def sandbox_exec(agent: Agent, bucket: str, command: str) -> dict[str, Any]:
    assert agent.http is not None
    reply = agent.http.post("/exec", json={"bucket": bucket, "command": command, "timeout": 60})
    assert reply.status_code == 200, reply.text
    return reply.json()


def payload(host_marker: Path, name: str) -> str:
    """Writes `id` to a host path (only reachable outside the sandbox) and to a marker in the
    workspace (relative: git runs hooks, filters and fsmonitor in the work tree's root)."""
    return f"id > {host_marker} 2>/dev/null; id > .weldr-pwned-{name} 2>/dev/null"


def plant_fsmonitor(host: Path) -> str:
    return f"git config core.fsmonitor {shlex.quote(payload(host, 'fsmonitor') + '; false')}"


def plant_hooks(host: Path) -> str:
    lines = []
    for hook in ("pre-commit", "post-commit", "post-checkout", "post-index-change",
                 "reference-transaction", "pre-auto-gc"):
        body = f"#!/bin/sh\n{payload(host, hook)}\nexit 0\n"
        lines.append(f"printf %s {shlex.quote(body)} > .git/hooks/{hook}")
        lines.append(f"chmod +x .git/hooks/{hook}")
    return " && ".join(["mkdir -p .git/hooks", *lines])


def plant_hooks_path(host: Path) -> str:
    body = f"#!/bin/sh\n{payload(host, 'hookspath')}\nexit 0\n"
    lines = [f"printf %s {shlex.quote(body)} > node_modules/.hooks/{hook} && "
             f"chmod +x node_modules/.hooks/{hook}"
             for hook in ("pre-commit", "post-commit", "post-index-change")]
    # Relative: hooks run in the work tree's root, wherever that is for whoever runs git.
    return " && ".join(["mkdir -p node_modules/.hooks", *lines,
                        "git config core.hooksPath node_modules/.hooks"])


def plant_include(host: Path) -> str:
    body = (f"[core]\n\tfsmonitor = {shlex.quote(payload(host, 'include') + '; false')}\n"
            "\thooksPath = node_modules/.hooks\n")
    hook = f"#!/bin/sh\n{payload(host, 'include-hook')}\nexit 0\n"
    return " && ".join([
        f"printf %s {shlex.quote(body)} > .git/planted.config",
        "mkdir -p node_modules/.hooks",
        f"printf %s {shlex.quote(hook)} > node_modules/.hooks/pre-commit",
        "chmod +x node_modules/.hooks/pre-commit",
        "git config include.path planted.config",
    ])


def plant_filter(host: Path) -> str:
    clean = payload(host, "filter") + "; cat"
    return " && ".join([
        "printf '* filter=evil\\n' > .gitattributes",
        f"git config filter.evil.clean {shlex.quote(clean)}",
        f"git config filter.evil.smudge {shlex.quote(clean)}",
    ])


ATTACKS: dict[str, Callable[[Path], str]] = {
    "fsmonitor": plant_fsmonitor, "hooks": plant_hooks, "hooks_path": plant_hooks_path,
    "include_path": plant_include, "filter": plant_filter,
}


def first_version(agent: Agent, scripts: Path) -> tuple[str, str, str, dict[str, Any]]:
    """A project whose workspace repository the agent made, with one version."""
    assert agent.http is not None
    project_id, branch_id = agent.project_branch()
    bucket = agent.http.get(f"/projects/{project_id}/branches").json()["branches"][0]["bucket"]
    run = agent.run_wait(agent.trigger(project_id, branch_id,
                                       run_script(scripts, "v1", "hello.txt", "v1\n"))
                         .json()["run_id"])
    assert run["status"] == "completed", run["error"]
    return project_id, branch_id, bucket, run["versions"][0]


def triggers(agent: Agent, scripts: Path, project_id: str, branch_id: str,
             version: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The three ways to make the agent run git: finalize, revert, install-integrations."""
    assert agent.http is not None
    http = agent.http

    def finalize() -> Any:
        model = run_script(scripts, f"v2-{secrets.token_hex(3)}", "hello.txt", "v2\n")
        return agent.run_wait(agent.trigger(project_id, branch_id, model).json()["run_id"])

    def revert() -> Any:
        return http.post("/revert", json={"project_id": project_id, "branch_id": branch_id,
                                          "version_id": version["id"]})

    def install() -> Any:
        return http.post("/install-integrations", json={
            "project_id": project_id, "branch_id": branch_id,
            "integrations": [{"key": "frontend"}]}, timeout=120)

    return {"finalize": finalize, "revert": revert, "install": install}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_planted_git_configuration_never_runs_on_the_host(agent: Agent, scripts: Path,
                                                          name: str) -> None:
    # given a workspace repository made by the agent, and code in the sandbox that swaps
    # .git for its own copy and plants the attack in it
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    host_marker = Path(f"/tmp/weldr-git-attack-{secrets.token_hex(6)}")
    planted = sandbox_exec(agent, bucket, f"set -e; {SWAP}; {ATTACKS[name](host_marker)}")
    assert planted["exit_code"] == 0, planted
    workspace = agent.workspace(bucket)

    # when the agent runs git: a run's finalize, a revert, an integration install
    hits: dict[str, str] = {}
    outcomes: dict[str, Any] = {}
    for trigger, action in triggers(agent, scripts, project_id, branch_id, version).items():
        outcomes[trigger] = action()
        if host_marker.exists():
            hits[trigger] = host_marker.read_text()
            host_marker.unlink()

    # then nothing ran on the host, and whatever ran, ran as the sandbox user in the sandbox
    assert hits == {}, f"the planted {name} ran on the host: {hits}"
    for marker in workspace.glob(".weldr-pwned-*"):
        assert marker.stat().st_uid == SANDBOX_UID, marker
        assert f"uid={SANDBOX_UID}" in marker.read_text()
    # and the agent's git still worked for a repository the sandbox owns
    assert outcomes["finalize"]["status"] == "completed", outcomes["finalize"]["error"]
    assert outcomes["revert"].status_code == 200, outcomes["revert"].text
    assert outcomes["install"].status_code == 200, outcomes["install"].text


def test_filter_runs_inside_the_sandbox_as_its_user(agent: Agent, scripts: Path) -> None:
    # given a clean filter planted from the sandbox (filters are git's job: it runs them)
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    host_marker = Path(f"/tmp/weldr-git-attack-{secrets.token_hex(6)}")
    assert sandbox_exec(agent, bucket, f"set -e; {SWAP}; {plant_filter(host_marker)}"
                        )["exit_code"] == 0

    # when a run's finalize adds the files
    run = triggers(agent, scripts, project_id, branch_id, version)["finalize"]()

    # then it ran — in the sandbox, as uid 1000 — and not on the host
    marker = agent.workspace(bucket) / ".weldr-pwned-filter"
    assert not host_marker.exists()
    assert run["status"] == "completed", run["error"]
    assert marker.exists() and marker.stat().st_uid == SANDBOX_UID
    assert marker.read_text().startswith(f"uid={SANDBOX_UID}")


def test_swapped_git_pointing_at_a_host_directory_touches_nothing(agent: Agent,
                                                                  scripts: Path) -> None:
    # given a host directory the sandbox cannot see, and a swapped .git whose work tree is it
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    victim = Path(f"/tmp/weldr-git-victim-{secrets.token_hex(6)}")
    victim.mkdir()
    (victim / "keep.txt").write_text("host data\n")
    planted = sandbox_exec(agent, bucket,
                           f"set -e; {SWAP}; git config core.worktree {victim}")
    assert planted["exit_code"] == 0, planted

    try:
        # when the agent runs git three ways
        for action in triggers(agent, scripts, project_id, branch_id, version).values():
            action()
            # then the host directory is exactly as it was: nothing added, removed or read in
            assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
            assert (victim / "keep.txt").read_text() == "host data\n"
        log = sandbox_exec(agent, bucket, "git log --all -p --format=%H")
        assert "host data" not in log["stdout"]
    finally:
        for path in victim.iterdir():
            path.unlink()
        victim.rmdir()


def owners(root: Path) -> set[int]:
    found = {root.lstat().st_uid}
    for directory, names, files in os.walk(root):
        found |= {(Path(directory) / name).lstat().st_uid for name in names + files}
    return found


def test_a_repository_made_by_root_is_handed_over_without_following_links(
        agent: Agent, scripts: Path) -> None:
    # given a repository as an older agent left it (everything root-owned), in which the
    # sandbox had planted links to a root-owned host file and directory
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    victim = Path(f"/tmp/weldr-git-victim-{secrets.token_hex(6)}")
    victim.mkdir()
    (victim / "file").write_text("host\n")
    try:
        planted = sandbox_exec(agent, bucket, f"ln -s {victim}/file .git/link-file && "
                                              f"ln -s {victim} .git/link-dir")
        assert planted["exit_code"] == 0, planted
        workspace = agent.workspace(bucket)
        runner.run(["chown", "-R", "-P", "0:0", str(workspace / ".git")], timeout=60)
        assert owners(workspace / ".git") == {0}

        # when the agent next runs git (a revert)
        reverted = triggers(agent, scripts, project_id, branch_id, version)["revert"]()

        # then the repository, history included, belongs to the sandbox user; links were not
        # followed: the host file and directory they point at are still root's
        assert reverted.status_code == 200, reverted.text
        assert owners(workspace / ".git") == {SANDBOX_UID}
        assert victim.stat().st_uid == 0 and (victim / "file").stat().st_uid == 0
        log = sandbox_exec(agent, bucket, "git log --format=%H")["stdout"].split()
        assert log[0] == reverted.json()["commit_hash"] and version["commit_hash"] in log
    finally:
        (victim / "file").unlink()
        victim.rmdir()


def test_a_git_linked_to_a_host_directory_is_never_walked(agent: Agent, scripts: Path) -> None:
    # given a root-owned host directory, and the sandbox replacing .git with a link to it
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    victim = Path(f"/tmp/weldr-git-victim-{secrets.token_hex(6)}")
    victim.mkdir()
    (victim / "HEAD").write_text("ref: refs/heads/main\n")
    try:
        planted = sandbox_exec(agent, bucket, f"mv .git .weldr-git-away && ln -s {victim} .git")
        assert planted["exit_code"] == 0, planted

        # when the agent runs git three ways (each may fail: there is no repository)
        for action in triggers(agent, scripts, project_id, branch_id, version).values():
            action()

        # then the host directory is untouched: same owner, same entries
        assert owners(victim) == {0}
        assert sorted(p.name for p in victim.iterdir()) == ["HEAD"]
    finally:
        (victim / "HEAD").unlink()
        victim.rmdir()


def test_git_planted_by_a_preview_app_never_runs_on_the_host(agent: Agent, scripts: Path,
                                                             ports_lock: None) -> None:
    """The same attacks from the other kind of sandbox: a preview app that plants them and
    keeps running while the agent finalizes a run, reverts and installs."""
    # given a preview whose app swaps .git and plants fsmonitor, hooks and a filter, then runs
    project_id, branch_id, bucket, version = first_version(agent, scripts)
    assert agent.http is not None
    host_marker = Path(f"/tmp/weldr-git-attack-{secrets.token_hex(6)}")
    plant = " && ".join([SWAP, plant_fsmonitor(host_marker), plant_hooks(host_marker),
                         plant_filter(host_marker), "touch .weldr-planted"])
    started = agent.http.post("/previews/start", json={
        "bucket": bucket, "command": f"{plant}; exec sleep 600"})
    assert started.status_code == 201, started.text
    workspace = agent.workspace(bucket)
    try:
        assert runner.wait_until(lambda: (workspace / ".weldr-planted").exists(), timeout=60)

        # when the agent runs git three ways while the app runs
        hits = {}
        for trigger, action in triggers(agent, scripts, project_id, branch_id, version).items():
            action()
            if host_marker.exists():
                hits[trigger] = host_marker.read_text()
                host_marker.unlink()

        # then nothing ran on the host
        assert hits == {}, f"the preview's planted git ran on the host: {hits}"
        for marker in workspace.glob(".weldr-pwned-*"):
            assert marker.stat().st_uid == SANDBOX_UID, marker
    finally:
        agent.http.post("/previews/stop", json={"bucket": bucket})
