"""Warm sandboxes (sandbox/warm.py): created ahead, started by a preview; and the cold path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from previews import system
from previews.models import Preview
from sandbox import container, warm
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


def test_an_app_in_a_warm_sandbox_cannot_write_its_start_fifo_or_script(
        api: APIClient, previews: None, workspace: Path) -> None:
    # given: a warm sandbox, whose start fifo and run.sh are in /.weldr
    warm.warm_pool.start()
    assert runner.wait_until(lambda: warm.warm_pool.ready_count() > 0, timeout=120)

    # when: its app tries to write the fifo (as a start does), make it writable, or change the
    # script (`timeout`: a fifo opened for writing would wait for a reader)
    api.post("/previews/start", {"bucket": workspace.name, "command": (
        "r=; timeout 2 sh -c 'echo go > /.weldr/start' 2>/dev/null && r=\"$r fifo\"; "
        "chmod 600 /.weldr/start 2>/dev/null && r=\"$r chmod\"; "
        "(echo exit >> /.weldr/run.sh) 2>/dev/null && r=\"$r script\"; "
        "ls -l /.weldr/start > fifo.txt; echo \"done:$r\" > attempts.txt")}, format="json")

    # then: it ran in the warm sandbox, and every attempt was refused
    assert wait_status(workspace.name, {"exited", "failed"}) == "exited"
    assert Preview.objects.get(bucket=workspace.name).container.startswith(
        warm.container_name(0)[:-1])
    assert (workspace / "fifo.txt").read_text().startswith("pr--------")
    assert (workspace / "attempts.txt").read_text() == "done:\n"


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


def test_the_pool_size_grows_with_a_burst_and_falls_back_after_it(settings) -> None:  # type: ignore[no-untyped-def]
    settings.PREVIEW_WARM_POOL_BURST = 20
    settings.PREVIEW_WARM_POOL_BURST_SECONDS = 120

    assert warm.pool_size(resting=2, burst=0, burst_age=float("inf")) == 2
    assert warm.pool_size(resting=2, burst=1, burst_age=0) == 2  # a start is not a burst
    assert warm.pool_size(resting=2, burst=12, burst_age=119) == 12
    assert warm.pool_size(resting=2, burst=12, burst_age=120) == 2  # aged out
    assert warm.pool_size(resting=0, burst=12, burst_age=0) == 0  # a pool turned off stays off
    settings.PREVIEW_WARM_POOL_BURST = 5
    assert warm.pool_size(resting=2, burst=12, burst_age=0) == 5  # capped


def warm_containers() -> list[str]:
    return [name for name in container.containers() if name.startswith(warm.container_name(0)[:-1])]


def test_the_warm_pool_grows_after_a_burst_of_starts_and_shrinks_back(
        previews: None, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # given a resting pool of one that may grow to three after a burst, and refills at once
    # (not a second or five after the last start, nor held back by a busy machine)
    settings.PREVIEW_WARM_POOL = 1
    settings.PREVIEW_WARM_POOL_BURST = 3
    settings.PREVIEW_WARM_POOL_BURST_SECONDS = 120
    monkeypatch.setattr(warm, "REFILL_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(warm, "GROW_DELAY_SECONDS", 0.0)
    monkeypatch.setattr(warm, "REFILL_BUSY_MAX_SECONDS", 0.0)
    pool = warm.warm_pool
    pool.start()
    try:
        assert runner.wait_until(lambda: pool.ready_count() >= 1, timeout=120)

        # when three starts come at once (the first takes the warm one, the others find none)
        taken = [pool.take(settings.WORKSPACE_BASE / f"burst-{n}") for n in range(3)]
        for sandbox in taken:
            if sandbox is not None:
                sandbox.box.destroy()
                pool.release(sandbox)

        # then the pool grows to the burst's size, so that the next burst starts warm
        assert pool.size == 3
        assert runner.wait_until(lambda: pool.ready_count() == 3, timeout=120)
        assert runner.wait_until(lambda: len(warm_containers()) == 3, timeout=60)
        # and once the burst is past (sooner here: the filler, told, sees it aged out; that it
        # wakes by itself for it is tests/sandbox/test_pool.py's), it shrinks back to its
        # resting size: the extra containers are deleted, not just forgotten
        settings.PREVIEW_WARM_POOL_BURST_SECONDS = 1
        with pool._lock:
            pool._lock.notify_all()
        assert runner.wait_until(lambda: pool.ready_count() == 1, timeout=60)
        assert runner.wait_until(lambda: len(warm_containers()) == 1, timeout=60)
    finally:
        # The burst is this test's: later tests start from a resting pool.
        with pool._lock:
            pool._takes.clear()
            pool._burst_at = None
