"""Integrations: the registry, installs that write files, merge package.json, write secrets to
.env, record a status and a revertible version; idempotent; a failed install changes nothing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from commands.services import exec_bucket_cleanup
from workflows import branches, gitrepo, services
from workflows.models import Branch, Integration, Version, WorkflowRun

VITE = (Path(__file__).resolve().parents[1]
        / "previews/fixtures/node_modules/vite/dist/node/index.js")


@pytest.fixture
def branch(settings, tmp_path: Path) -> Iterator[Branch]:  # type: ignore[no-untyped-def]
    """A branch in local workspace mode (the mounted path runs in test_engine_providers.py);
    git runs in its exec sandbox, started in this process and stopped after the test."""
    settings.WORKSPACE_MODE = "local"
    settings.WORKSPACE_BASE = tmp_path / "workspaces"
    project = services.project_create(name="p")
    made = services.branch_create(project=project, name="main",
                                  bucket=f"integration-{secrets.token_hex(4)}")
    try:
        yield made
    finally:
        exec_bucket_cleanup(made.bucket)


def workspace_of(branch: Branch) -> Path:
    return branches.branch_workspace(branch)


def repo_of(branch: Branch) -> gitrepo.Repo:
    return gitrepo.Repo(bucket=branch.bucket, workspace=workspace_of(branch))


def install(api: APIClient, branch: Branch, *items: dict) -> dict:  # type: ignore[type-arg]
    reply = api.post("/install-integrations", {
        "project_id": branch.project_id, "branch_id": branch.id, "integrations": list(items)},
        format="json")
    assert reply.status_code == 200, reply.json()
    return reply.json()


def snapshot(workspace: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workspace)): p.read_bytes() for p in workspace.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(workspace).parts}


def test_registry_lists_frontend_database_and_auth(api: APIClient) -> None:
    reply = api.get("/integrations")
    assert reply.status_code == 200
    found = {i["key"]: i for i in reply.json()["integrations"]}
    assert {"frontend", "database", "auth"} <= set(found)
    assert found["frontend"]["category"] == "frontend"
    assert found["auth"]["requires"] == ["database"]
    assert "BETTER_AUTH_SECRET" in found["auth"]["env"]


def test_install_writes_files_merges_package_json_and_commits_a_version(
        api: APIClient, branch: Branch) -> None:
    # given an app with its own package.json
    workspace = workspace_of(branch)
    (workspace / "package.json").write_text(json.dumps(
        {"name": "mine", "dependencies": {"react": "18.3.1"}, "scripts": {"dev": "my-dev"}}))

    # when the three integrations are installed
    body = install(api, branch, {"key": "frontend"},
                   {"key": "database", "options": {"database_url": "postgres://db/app"}},
                   {"key": "auth"})

    # then each is installed, with its files, merged dependencies and env vars
    assert [(i["key"], i["status"]) for i in body["installed_integrations"]] == \
        [("frontend", "installed"), ("database", "installed"), ("auth", "installed")]
    package = json.loads((workspace / "package.json").read_text())
    assert package["name"] == "mine"
    assert package["dependencies"]["react"] == "18.3.1"  # the app's own pin wins
    assert {"react-dom", "pg", "better-auth"} <= set(package["dependencies"])
    assert package["devDependencies"]["vite"]
    assert package["scripts"]["dev"] == "my-dev" and package["scripts"]["build"] == "vite build"
    for path in ("index.html", "src/main.jsx", "src/App.jsx", "vite.config.js",
                 "src/server/db.js", "src/server/auth.js"):
        assert (workspace / path).is_file(), path
    # .env values are written single-quoted by the dotenv serializer
    env = dict(line.split("=", 1) for line in (workspace / ".env").read_text().splitlines())
    assert env["DATABASE_URL"] == "'postgres://db/app'"
    assert len(env["BETTER_AUTH_SECRET"].strip("'")) >= 32
    # and every install is a version, the last one at HEAD
    versions = list(Version.objects.filter(branch=branch).order_by("number"))
    assert [v.number for v in versions] == [1, 2, 3]
    assert versions[-1].commit_hash == gitrepo.head(repo_of(branch))
    assert gitrepo.changed_paths(repo_of(branch)) == []


def test_install_is_idempotent_and_keeps_secrets(api: APIClient, branch: Branch) -> None:
    install(api, branch, {"key": "database"}, {"key": "auth"})
    workspace = workspace_of(branch)
    before = snapshot(workspace)

    again = install(api, branch, {"key": "database"}, {"key": "auth"})

    assert [i["status"] for i in again["installed_integrations"]] == ["installed", "installed"]
    assert snapshot(workspace) == before
    assert Version.objects.filter(branch=branch).count() == 2
    assert Integration.objects.filter(branch=branch).count() == 2


def test_failed_install_leaves_the_workspace_as_it_was(api: APIClient, branch: Branch) -> None:
    # given a workspace where src/ is a file: index.html gets written, src/main.jsx cannot
    workspace = workspace_of(branch)
    gitrepo.repo_ensure(repo_of(branch))
    (workspace / "src").write_text("not a directory")
    (workspace / "package.json").write_text('{"name": "mine"}')
    before = snapshot(workspace)

    reply = api.post("/install-integrations", {
        "project_id": branch.project_id, "branch_id": branch.id,
        "integrations": [{"key": "frontend"}]}, format="json")

    assert reply.status_code == 500 and reply.json()["code"] == "integration_failed"
    assert snapshot(workspace) == before
    assert not (workspace / "index.html").exists()
    assert Integration.objects.get(branch=branch, key="frontend").status == "failed"
    assert not Version.objects.filter(branch=branch).exists()


def test_an_install_can_be_reverted(api: APIClient, branch: Branch) -> None:
    install(api, branch, {"key": "frontend"})
    workspace = workspace_of(branch)
    (workspace / "notes.txt").write_text("mine")
    first = branches.version_record(branch=branch, description="notes",
                                    commit_hash=gitrepo.commit_all(repo_of(branch), "notes") or "")
    install(api, branch, {"key": "database"})
    assert (workspace / "src/server/db.js").exists()

    reply = api.post("/revert", {"project_id": branch.project_id, "branch_id": branch.id,
                                 "version_id": first.id}, format="json")

    assert reply.status_code == 200, reply.json()
    assert not (workspace / "src/server/db.js").exists()
    assert not (workspace / ".env").exists()
    assert "pg" not in json.loads((workspace / "package.json").read_text())["dependencies"]
    assert (workspace / "notes.txt").read_text() == "mine"


def test_install_errors(api: APIClient, branch: Branch) -> None:
    def post(items: list) -> dict:  # type: ignore[type-arg]
        return api.post("/install-integrations", {
            "project_id": branch.project_id, "branch_id": branch.id, "integrations": items},
            format="json")

    unknown = post([{"key": "blockchain"}])
    bad_options = post([{"key": "database", "options": {"database_url": "mysql://x"}}])
    missing_dependency = post([{"key": "auth"}])
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_integration"
    assert bad_options.status_code == 400 and bad_options.json()["code"] == "invalid_options"
    assert missing_dependency.status_code == 400
    assert "database" in missing_dependency.json()["detail"]

    WorkflowRun.objects.create(branch=branch, model="x", status="running")
    busy = post([{"key": "frontend"}])
    assert busy.status_code == 409 and busy.json()["code"] == "run_active"


@pytest.mark.parametrize("url", [
    "postgres://x\nEVIL=1", "postgres://x\n", "postgres://x\rEVIL=1", "postgres://x\x00",
    "postgres://a b@db/app", "postgres://u:p$HOME@db/app", "postgres://u:p'q@db/app",
    "postgres://u:p\\q@db/app", "postgres://\u2028db", "mysql://db"])
def test_options_must_match_in_full_and_never_reach_env_as_text(
        api: APIClient, branch: Branch, url: str) -> None:
    # given an app whose .env is the user's
    workspace = workspace_of(branch)
    (workspace / ".env").write_text("MINE=1\n")

    reply = api.post("/install-integrations", {
        "project_id": branch.project_id, "branch_id": branch.id,
        "integrations": [{"key": "database", "options": {"database_url": url}}]}, format="json")

    assert reply.status_code == 400, reply.json()
    assert reply.json()["code"] == "invalid_options"
    assert "database_url" in reply.json()["detail"]
    assert (workspace / ".env").read_text() == "MINE=1\n"
    assert not (workspace / "src/server/db.js").exists()


def test_unknown_options_are_refused(api: APIClient, branch: Branch) -> None:
    reply = api.post("/install-integrations", {
        "project_id": branch.project_id, "branch_id": branch.id,
        "integrations": [{"key": "frontend", "options": {"anything": "x"}}]}, format="json")
    assert reply.status_code == 400 and reply.json()["code"] == "invalid_options"


def test_env_values_read_back_identically_by_node(api: APIClient, branch: Branch) -> None:
    # given a URL with every character the serializer lets through that a reader could mangle
    url = "postgres://u:p%24%27#x@db:5432/app?sslmode=require&a=(1)*[2];b=,!~"
    install(api, branch, {"key": "database", "options": {"database_url": url}})
    workspace = workspace_of(branch)

    # when Node reads the .env the way an app started with --env-file does, and Vite's loadEnv
    clean = {"PATH": os.environ["PATH"]}
    node = subprocess.run(
        ["node", f"--env-file={workspace / '.env'}", "-e",
         "process.stdout.write(process.env.DATABASE_URL)"],
        capture_output=True, text=True, timeout=30, check=True, env=clean).stdout
    vite = subprocess.run(
        ["node", "--input-type=module", "-e",
         f"import {{ loadEnv }} from {json.dumps(str(VITE))};"
         f"process.stdout.write(loadEnv('development', {json.dumps(str(workspace))}, '')"
         ".DATABASE_URL)"],
        capture_output=True, text=True, timeout=30, check=True, env=clean).stdout

    # then both see exactly the option's value
    assert node == url
    assert vite == url


def test_dotenv_serializer_refuses_what_readers_disagree_on() -> None:
    from workflows.integrations.dotenv import UnsafeEnvValue, dotenv_line, dotenv_names

    assert dotenv_line("A_1", "x #y \"z\" `w`") == "A_1='x #y \"z\" `w`'"
    for name, value in (("A", "x\ny"), ("A", "it's"), ("A", "$HOME"), ("A", "a\\b"),
                        ("A", "caf\u00e9"), ("1A", "x"), ("A B", "x"), ("A\nB", "x")):
        with pytest.raises(UnsafeEnvValue):
            dotenv_line(name, value)
    assert dotenv_names("# X=1\nexport A=1\n B = 2\nC\n") == {"A", "B"}
