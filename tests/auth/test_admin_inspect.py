"""/admin/ shows what an operator inspects: projects, branches, runs with their events, events,
versions, integrations and background commands; read-only, filtered and searchable."""

from __future__ import annotations

from django.contrib.admin.utils import quote

from commands.models import ExecCommand
from tests.auth.test_admin import admin_client  # noqa: F401  (the superuser's client)
from workflows.models import Branch, Event, Integration, Project, Version, WorkflowRun


def make_rows() -> dict[str, object]:
    project = Project.objects.create(name="inspected-project", owner_id="owner-1")
    branch = Branch.objects.create(project=project, name="main", bucket="inspected-bucket")
    run = WorkflowRun.objects.create(branch=branch, status="failed", model="test-model",
                                     error="the provider refused")
    event = Event.objects.create(branch=branch, seq=1, type="run.failed-inline", run=run,
                                 data={"detail": "inline-event-data"})
    version = Version.objects.create(branch=branch, number=1, commit_hash="c0ffee1234",
                                     description="first version", run=run)
    integration = Integration.objects.create(project=project, branch=branch, key="stripe-x",
                                             category="payments", status="failed")
    # an id whose "_22" the admin's URLs must quote (unquoted, it reads as '"'): one in 43
    # random ids begins so, and a test that built the URL from the raw id failed on CI
    command = ExecCommand.objects.create(id="exec_22c0ffee00000000", bucket="inspected-bucket",
                                         command=["sleep", "1"], status="killed")
    return {"project": project, "branch": branch, "workflowrun": run, "event": event,
            "version": version, "integration": integration, "execcommand": command}


def test_every_agent_owned_row_has_a_changelist_and_a_read_only_page(admin_client):  # noqa: F811
    # given one row of each kind
    rows = make_rows()

    # when the superuser opens the index, each changelist (filtered and searched) and each page
    index = admin_client.get("/admin/")
    assert index.status_code == 200
    for label in (b"Projects", b"Branchs", b"Workflow runs", b"Events", b"Versions",
                  b"Integrations", b"Exec commands"):
        assert label in index.content, label
    lists = {
        "/admin/workflows/project/?q=inspected": b"inspected-project",
        f"/admin/workflows/branch/?project__id__exact={rows['project'].pk}": b"inspected-bucket",
        "/admin/workflows/workflowrun/?status__exact=failed&q=inspected-bucket": b"test-model",
        "/admin/workflows/event/?q=inspected-bucket": b"run.failed-inline",
        "/admin/workflows/version/?q=c0ffee": b"c0ffee1234",
        "/admin/workflows/integration/?status__exact=failed": b"stripe-x",
        "/admin/commands/execcommand/?bucket=inspected-bucket&status__exact=killed":
            rows["execcommand"].pk.encode(),
    }
    for url, expected in lists.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert expected in response.content, url
    # a filter or search that matches nothing shows nothing
    empty = admin_client.get("/admin/workflows/workflowrun/?status__exact=completed")
    assert b"test-model" not in empty.content

    # then every row's page opens, read-only; a run's page shows its events inline
    for name, row in rows.items():
        app = "commands" if name == "execcommand" else "workflows"
        page = admin_client.get(f"/admin/{app}/{name}/{quote(row.pk)}/change/")
        assert page.status_code == 200, name
        assert b'type="submit" value="Save"' not in page.content, name
        assert admin_client.get(f"/admin/{app}/{name}/add/").status_code == 403, name
        deleted = admin_client.post(f"/admin/{app}/{name}/{quote(row.pk)}/delete/",
                                    {"post": "yes"})
        assert deleted.status_code == 403, name
    run_page = admin_client.get(f"/admin/workflows/workflowrun/{rows['workflowrun'].pk}/change/")
    assert b"run.failed-inline" in run_page.content and b"inline-event-data" in run_page.content
    assert Project.objects.filter(pk=rows["project"].pk).exists()
