"""Commands end with their bucket: the unmount guard kills them and lets go of the mount."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.exec.conftest import mount
from tests.exec.helpers import processes_with
from weldr_agent import runner

pytestmark = pytest.mark.slow


def test_unmount_kills_background_commands(http: httpx.Client) -> None:
    # given a bucket with a background command running in its sandbox
    name = f"exec-unmount-{secrets.token_hex(3)}"
    mount(http, name)
    started = http.post("/exec", json={"bucket": name, "command": "exec sleep 37.71",
                                       "background": True, "timeout": 600})
    assert started.status_code == 202, started.text
    exec_id = started.json()["id"]
    assert runner.wait_until(lambda: processes_with("sleep 37.71"), timeout=10)

    # when the bucket is unmounted (no force)
    response = http.post("/mounts/unmount", json={"bucket": name}, timeout=300)

    # then the command is gone, recorded as killed, and the bucket really unmounted
    assert response.status_code == 200, response.text
    assert runner.wait_until(lambda: not processes_with("sleep 37.71"), timeout=15)
    assert runner.wait_until(
        lambda: http.get(f"/exec/{exec_id}").json()["status"] == "killed", timeout=15)
    after = http.post("/exec", json={"bucket": name, "command": "true"})
    assert after.status_code == 409 and after.json()["code"] == "not_mounted"
