"""The image as shipped, booted as Fly boots it (see conftest.py): healthy within the check's
grace period, a bucket mounted, a file written and a command run in it, a preview served
through the published port, SIGTERM → exit 0 within kill_timeout with the work in S3, and a
second machine with an empty volume that gets the workspace back from S3 alone."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.deploy.conftest import HEALTH_GRACE, KILL_TIMEOUT, PREVIEW_PORT, REPO, Machine, podman
from tests.previews.conftest import SERVER_JS, http_get
from weldr_agent import runner, s3


def healthy_after(machine: Machine) -> float:
    """Seconds from the container's start to the first /health 200 (Fly's readiness check)."""
    answer: dict = {}

    def healthy() -> bool:
        try:
            response = httpx.get(f"{machine.url}/health", timeout=2)
        except httpx.HTTPError:
            return False
        answer.update(status=response.status_code, body=response.text)
        return response.status_code == 200

    ok = runner.wait_until(healthy, timeout=HEALTH_GRACE, interval=0.1)
    took = time.monotonic() - machine.started_at
    assert ok, f"/health not 200 within {HEALTH_GRACE}s: {answer}\n{machine.logs()}"
    checks = json.loads(answer["body"])["checks"]
    # every dependency answers from inside the container: databases, S3, FUSE, the OCI runtime
    needed = ("state_db", "shared_db", "channel_layer", "s3", "fuse", "oci_runtime")
    assert {name: checks.get(name) for name in needed} == dict.fromkeys(needed, "ok"), checks
    return took


def sigterm(machine: Machine) -> float:
    """Fly's stop: SIGTERM to the machine's init (here PID 1, the agent), then wait at most
    kill_timeout; return how long the agent took to exit."""
    started = time.monotonic()
    podman("kill", "--signal", "TERM", machine.name)
    waited = podman("wait", machine.name, timeout=KILL_TIMEOUT + 5, check=False)
    took = time.monotonic() - started
    assert waited.returncode == 0 and took <= KILL_TIMEOUT, \
        f"not stopped within {KILL_TIMEOUT}s ({took:.1f}s)\n{machine.logs()}"
    return took


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_image_boots_serves_stops_and_a_new_machine_gets_the_workspace_back(
        machines, image: str, bucket: str):
    # given the image booted as a Fly Machine
    first = machines()
    first.boot(image)
    # then the agent is PID 1 and healthy within the check's grace period
    up = healthy_after(first)
    assert "manage.py\0serve" in first.exec("cat", "/proc/1/cmdline").stdout
    # and the image carries the SDK's `weldr` command
    assert "weldr" in first.exec("/app/.venv/bin/weldr", "--help").stdout
    print(f"\nfirst machine: /health 200 {up:.1f}s after the container started")
    api = first.client()
    # when a bucket is mounted, a file written and a command run in the workspace
    mounted = api.post("/mounts", json={"bucket": bucket})
    assert mounted.status_code == 201, mounted.text
    assert mounted.json()["path"] == f"/workspace/{bucket}"
    print(f"first machine: mounted with the {mounted.json()['layout']} layout")
    written = api.put(f"/files/{bucket}/content", params={"path": "notes/hello.txt"},
                      content=b"written in the image\n")
    assert written.status_code == 200, written.text
    ran = api.post("/exec", json={"bucket": bucket, "command":
                                  "cat notes/hello.txt && echo made by exec > notes/exec.txt"})
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 0, ran.text
    assert ran.json()["stdout"] == "written in the image\n"
    # and a preview is started
    server = SERVER_JS.replace("process.env.BUCKET_LABEL", '"the image"')
    assert api.put(f"/files/{bucket}/content", params={"path": "server.js"},
                   content=server.encode()).status_code == 200
    asked = time.monotonic()
    # (public: production's default is a private preview, docs/previews.md "Access")
    preview = api.post("/previews/start", json={"bucket": bucket, "port": PREVIEW_PORT,
                                                "command": "node server.js", "access": "public"})
    assert preview.status_code == 201, preview.text
    print(f"first machine: preview started in {time.monotonic() - asked:.2f}s")
    # then it answers through the published port
    status, body = http_get(f"http://127.0.0.1:{first.preview_port}/", timeout=120)
    assert (status, body) == (200, f"hello from the image on {PREVIEW_PORT}\n")
    # from a warm sandbox: the runtime in the image (crun, where the cgroup mounts allow it)
    # starts a created container the way the agent asks
    assert "failed to start" not in first.logs(tail=10**7), first.logs()
    # when Fly stops the machine
    took = sigterm(first)
    print(f"first machine: exited {took:.1f}s after SIGTERM")
    # then the agent exited 0, and the workspace's blocks and metadata are in S3
    assert first.state()["exit_code"] == "0", first.logs()
    keys = {item["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket) for item in page.get("Contents", [])}
    assert any("/chunks/" in key for key in keys), sorted(keys)[:50]
    # when a new machine with an empty volume boots and mounts the same bucket
    second = machines()
    second.boot(image)
    print(f"second machine: /health 200 {healthy_after(second):.1f}s after the container started")
    api = second.client()
    mounted = api.post("/mounts", json={"bucket": bucket})
    # then the workspace is back, with what the command wrote
    assert mounted.status_code == 201, mounted.text
    assert mounted.json()["restored"] is True
    read = api.get(f"/files/{bucket}/content", params={"path": "notes/hello.txt"})
    assert read.status_code == 200 and read.text == "written in the image\n"
    read = api.get(f"/files/{bucket}/content", params={"path": "notes/exec.txt"})
    assert read.status_code == 200 and read.text == "made by exec\n"
    sigterm(second)
    assert second.state()["exit_code"] == "0", second.logs()


def test_build_script_has_help_and_refuses_bad_arguments():
    script = REPO / "scripts" / "build-image.sh"
    assert "Usage" in runner.run([script, "--help"], timeout=30).stdout
    for bad in (["--bogus"], ["--tag"], ["--tag", "Not An Image"], ["--tag", "-x"]):
        result = runner.run([script, *bad], timeout=30, check=False)
        assert result.returncode == 2 and "build-image.sh:" in result.stderr, (bad, result)
