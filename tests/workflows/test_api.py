"""The HTTP shapes of projects, branches, trigger and runs (docs/api.md)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from workflows import worker
from workflows.models import Event, Message, WorkflowRun


@pytest.fixture
def submitted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Runs handed to the worker (kept out of threads: these tests check the HTTP layer)."""
    ids: list[str] = []
    monkeypatch.setattr(worker, "run_submit", ids.append)
    return ids


@pytest.fixture
def branch(api: APIClient) -> dict:  # type: ignore[type-arg]
    project = api.post("/projects", {"name": "demo"}, format="json").json()
    reply = api.post(f"/projects/{project['id']}/branches", {"name": "main", "bucket": "demo-app"},
                     format="json")
    assert reply.status_code == 201, reply.json()
    return reply.json()


def trigger(api: APIClient, branch: dict, **extra: object):  # type: ignore[no-untyped-def,type-arg]
    body = {"project_id": branch["project_id"], "branch_id": branch["id"],
            "message": {"content": [{"type": "text", "text": "Add a page"}]}, **extra}
    return api.post("/trigger", body, format="json")


def test_projects_and_branches(api: APIClient, branch: dict) -> None:  # type: ignore[type-arg]
    projects = api.get("/projects").json()["projects"]
    assert [p["id"] for p in projects] == [branch["project_id"]]
    branches = api.get(f"/projects/{branch['project_id']}/branches").json()["branches"]
    assert branches == [branch]
    assert branch["bucket"] == "demo-app"

    duplicate = api.post(f"/projects/{branch['project_id']}/branches",
                         {"name": "main", "bucket": "other-app"}, format="json")
    bad_bucket = api.post(f"/projects/{branch['project_id']}/branches",
                          {"name": "x", "bucket": "Bad_Bucket"}, format="json")
    ip_bucket = api.post(f"/projects/{branch['project_id']}/branches",
                         {"name": "y", "bucket": "192.168.1.1"}, format="json")
    unknown = api.get("/projects/nope/branches")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "branch_exists"
    assert bad_bucket.status_code == 400 and bad_bucket.json()["code"] == "invalid_bucket"
    assert ip_bucket.status_code == 400 and ip_bucket.json()["code"] == "invalid_bucket"
    assert unknown.status_code == 404 and unknown.json()["code"] == "project_not_found"


def test_trigger_queues_a_run_records_the_message_and_answers_202(
        api: APIClient, branch: dict, submitted: list[str]) -> None:  # type: ignore[type-arg]
    reply = trigger(api, branch, model="openai/gpt-4.1")

    assert reply.status_code == 202
    assert reply.json()["status"] == "queued"
    run_id = reply.json()["run_id"]
    assert submitted == [run_id]
    run = api.get(f"/runs/{run_id}").json()
    assert (run["status"], run["model"], run["versions"]) == ("queued", "openai/gpt-4.1", [])
    message = Message.objects.get(run_id=run_id)
    assert message.role == "user"
    assert message.content == [{"type": "text", "text": "Add a page"}]
    assert list(Event.objects.filter(run_id=run_id).values_list("seq", "type")) == \
        [(1, "run.queued")]
    listed = api.get("/runs", {"project_id": branch["project_id"], "branch_id": branch["id"]})
    assert [r["id"] for r in listed.json()["runs"]] == [run_id]


def test_one_active_run_per_branch(api: APIClient, branch: dict,  # type: ignore[type-arg]
                                   submitted: list[str], settings) -> None:  # type: ignore[no-untyped-def]
    first = trigger(api, branch)
    second = trigger(api, branch)

    assert first.status_code == 202
    assert second.status_code == 409 and second.json()["code"] == "run_active"
    assert WorkflowRun.objects.filter(branch_id=branch["id"]).count() == 1
    assert trigger(api, branch).json()["code"] == "run_active"
    assert first.json()["run_id"] and submitted == [first.json()["run_id"]]
    assert WorkflowRun.objects.get().model == settings.DEFAULT_MODEL
    # the database itself refuses a second active run, whoever writes it
    with pytest.raises(IntegrityError), transaction.atomic(using="shared"):
        WorkflowRun.objects.create(branch_id=branch["id"], model="m", status="running")

    WorkflowRun.objects.update(status="completed")
    assert trigger(api, branch).status_code == 202


def test_trigger_errors(api: APIClient, anon: APIClient,  # type: ignore[type-arg]
                        branch: dict, submitted: list[str]) -> None:
    unknown_branch = trigger(api, {**branch, "id": "nope"})
    unknown_project = trigger(api, {**branch, "project_id": "nope"})
    other_project = api.post("/projects", {"name": "other"}, format="json").json()
    cross = trigger(api, {**branch, "project_id": other_project["id"]})
    empty = api.post("/trigger", {"project_id": branch["project_id"], "branch_id": branch["id"],
                                  "message": {"content": []}}, format="json")
    bad_model = trigger(api, branch, model="gpt-4")
    anonymous = trigger(anon, branch)

    assert unknown_branch.status_code == 404 and unknown_branch.json()["code"] == \
        "branch_not_found"
    assert unknown_project.status_code == 404
    assert cross.status_code == 404
    assert empty.status_code == 400 and empty.json()["code"] == "invalid"
    assert bad_model.status_code == 400 and "model" in bad_model.json()["errors"]
    assert anonymous.status_code == 401
    assert submitted == []
    assert api.get("/runs/nope").status_code == 404


def test_revert_unknown_version_is_404(api: APIClient, branch: dict) -> None:  # type: ignore[type-arg]
    reply = api.post("/revert", {"project_id": branch["project_id"], "branch_id": branch["id"],
                                 "version_id": "nope"}, format="json")
    assert reply.status_code == 404 and reply.json()["code"] == "version_not_found"


def test_openapi_describes_the_workflow_endpoints(anon: APIClient) -> None:
    paths = anon.get("/openapi.json").json()["paths"]
    for path in ("/projects", "/projects/{project_id}/branches", "/trigger", "/runs",
                 "/runs/{run_id}", "/revert", "/events", "/integrations",
                 "/install-integrations"):
        assert path in paths, path
