"""Warm sandboxes (sandbox/warm.py): created ahead, started by a preview; and the cold path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from previews import system
from previews.models import Preview
from sandbox import warm
from tests.previews.conftest import http_get, wait_status
from weldr_agent import runner

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

ENV_JS = """const fs = require("fs");
console.log("warm app up");
require("http").createServer((q, s) => s.end(JSON.stringify({
  label: process.env.LABEL, cwd: process.cwd(), port: process.env.PORT,
  base: fs.readdirSync(process.env.BASE),
}))).listen(Number(process.env.PORT), process.env.HOST);
"""


def slot_mounts() -> list[str]:
    """Mount points under this instance's slots directory (host side)."""
    base = str(warm.slots_dir()) + "/"
    with open("/proc/self/mountinfo") as table:
        return [line.split()[4] for line in table if line.split()[4].startswith(base)]


def test_a_warm_sandbox_runs_the_app_with_its_env_workspace_and_log(
        api: APIClient, previews: None, workspace: Path) -> None:
    # given: a warm sandbox ready
    (workspace / "server.js").write_text(ENV_JS)
    warm.warm_pool.start()
    assert runner.wait_until(lambda: warm.warm_pool.ready_count() > 0, timeout=120)
    label = "it's \"quoted\" $HOME `x`"

    # when
    body = api.post("/previews/start", {
        "bucket": workspace.name, "command": "node server.js",
        "env": {"LABEL": label, "BASE": str(workspace.parent)}}, format="json").json()

    # then: the app runs in the warm sandbox, in its workspace, with its environment
    preview = Preview.objects.get(bucket=workspace.name)
    assert preview.container.startswith(warm.container_name(0)[:-1])
    assert preview.pid is not None
    status, text = http_get(f"http://127.0.0.1:{body['port']}/")
    assert status == 200
    # Only its own workspace is there in the workspace base.
    assert json.loads(text) == {"label": label, "cwd": str(workspace),
                                "port": str(body["port"]), "base": [workspace.name]}
    assert wait_status(workspace.name, {"running"}) == "running"
    assert "warm app up" in system.log_path(workspace.name).read_text()
    assert any(point.endswith(f"/ws/{workspace.name}") for point in slot_mounts())

    # when: stopped, the workspace is unbound (and kept), the pool refills
    api.post("/previews/stop", {"bucket": workspace.name}, format="json")
    assert not any(point.endswith(f"/ws/{workspace.name}") for point in slot_mounts())
    assert (workspace / "server.js").read_text() == ENV_JS
    pool = warm.warm_pool
    assert runner.wait_until(lambda: pool.ready_count() == pool.size, timeout=120)


def test_an_app_that_crashes_in_a_warm_sandbox_is_failed_and_released(
        api: APIClient, previews: None, workspace: Path) -> None:
    warm.warm_pool.start()
    assert runner.wait_until(lambda: warm.warm_pool.ready_count() > 0, timeout=120)

    api.post("/previews/start", {"bucket": workspace.name,
                                 "command": "echo going down; exit 3"}, format="json")

    assert wait_status(workspace.name, {"failed"}) == "failed"
    assert Preview.objects.get(bucket=workspace.name).exit_code == 3
    assert "going down" in system.log_path(workspace.name).read_text()
    assert not any(point.endswith(f"/ws/{workspace.name}") for point in slot_mounts())


def test_without_a_warm_pool_a_preview_starts_cold(api: APIClient, previews: None,
                                                  workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PREVIEW_WARM_POOL = 0
    (workspace / "server.js").write_text(ENV_JS)

    body = api.post("/previews/start", {
        "bucket": workspace.name, "command": "node server.js",
        "env": {"LABEL": "cold", "BASE": str(workspace.parent)}}, format="json").json()

    assert Preview.objects.get(bucket=workspace.name).container == \
        system.container_name(workspace.name)
    status, text = http_get(f"http://127.0.0.1:{body['port']}/")
    assert status == 200 and json.loads(text)["label"] == "cold"


def test_a_workspace_outside_the_workspace_base_starts_cold(tmp_path: Path) -> None:
    assert warm.warm_pool.take(tmp_path / "elsewhere") is None
    assert settings.WORKSPACE_BASE != tmp_path
