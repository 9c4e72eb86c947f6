"""The agent on a machine without loop devices: it says so, keeps working with the files layout,
and answers 409 (never 500) for the image layout.

The agent runs in a mount namespace of its own whose /dev is a tmpfs holding every device of
the host's /dev but /dev/loop-control and /dev/loopN (bound in one by one): for that process
they are absent, as on a platform that offers none, while the rest of the machine keeps them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from mounts import services, steps, system
from weldr_agent import runner, s3

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Run as `sh -c HIDE_LOOP_DEVICES sh ARGV...` inside `unshare --mount`: a new /dev without the
# loop devices, then exec ARGV (the agent).
HIDE_LOOP_DEVICES = r"""
set -eu
old=$(mktemp -d)
mount --rbind /dev "$old"
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
for entry in "$old"/* "$old"/.[!.]*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry##*/}
  case "$name" in loop-control|loop[0-9]*) continue ;; esac
  if [ -L "$entry" ]; then cp -P "$entry" "/dev/$name"
  elif [ -d "$entry" ]; then mkdir "/dev/$name"; mount --rbind "$entry" "/dev/$name"
  else : > "/dev/$name"; mount --bind "$entry" "/dev/$name"; fi
done
umount -l "$old"
rmdir "$old"
exec "$@"
"""
WITHOUT_LOOP_DEVICES = ("unshare", "--mount", "--propagation", "private", "--",
                        "sh", "-c", HIDE_LOOP_DEVICES, "sh")


def _bucket_exists(name: str) -> bool:
    try:
        s3.client().head_bucket(Bucket=name)
        return True
    except ClientError:
        return False


def test_the_namespace_really_has_no_loop_devices():
    # given the namespace the agent below runs in, when losetup looks for a device there
    found = runner.run([*WITHOUT_LOOP_DEVICES, "sh", "-c",
                        "ls /dev/loop* 2>&1; losetup --find 2>&1; test -e /dev/null"],
                       timeout=30, check=False)
    # then there is none to find, and the other devices are there
    assert found.returncode == 0, found.stdout + found.stderr
    assert "No such file" in found.stdout and "/dev/loop0" not in found.stdout, found.stdout
    assert "cannot find an unused loop device" in found.stdout, found.stdout
    # while the host keeps its own
    assert Path("/dev/loop-control").exists()


def test_without_loop_devices_the_agent_says_so_and_falls_back_to_files(agent_process, buckets,
                                                                         tmp_path):
    # given an image volume made on a machine with loop devices (this test process)
    image_bucket = buckets()
    mount, _ = services.mount_create(bucket=image_bucket, layout="image")
    assert mount.layout == "image"
    services.mount_remove(bucket=image_bucket)
    new_bucket, refused_bucket = buckets(), buckets()

    # when an agent whose WORKSPACE_LAYOUT is image starts on a machine without loop devices
    # (another machine: its own volume directory, not the one this process mounted from)
    # (its first /health imports the S3 and Redis clients: on a loaded machine that takes more
    # than the production 0.8 s, which this test is not about)
    agent_process.env.update({"WORKSPACE_LAYOUT": "image", "LOG_LEVEL": "INFO",
                              "WELDR_ENV_VOL": str(tmp_path / "machine-b"),
                              "HEALTH_CHECK_TIMEOUT_SECONDS": "20"})
    agent_process.start(prefix=WITHOUT_LOOP_DEVICES)  # (`serve` migrates a new state database)
    token = agent_process.manage("create_api_token", "--name", "t").stdout.split()[-1]
    http = httpx.Client(base_url=agent_process.url, timeout=180,
                        headers={"Authorization": f"Bearer {token}"})

    # then its start-up log says so, where an operator looks
    log = agent_process.log.read_text()
    assert "LOOP DEVICES UNAVAILABLE: /dev/loop-control is not usable: No such file" in log, \
        log[-3000:]
    assert "new volumes get the files layout" in log
    # and /health reports it beside the checks, and stays 200
    health = httpx.get(f"{agent_process.url}/health", timeout=30)
    body = health.json()
    assert health.status_code == 200, body
    assert body["status"] == "ok"
    assert body["capabilities"]["loop_devices"].startswith(
        "/dev/loop-control is not usable: No such file or directory"), body
    assert "loop_devices" not in body["checks"]

    # when a new bucket is mounted without asking for a layout
    created = http.post("/mounts", json={"bucket": new_bucket})
    # then it gets the files layout, and works
    assert created.status_code == 201, created.text
    assert created.json()["layout"] == "files"
    written = http.put(f"/files/{new_bucket}/content", params={"path": "src/a.txt"},
                       content=b"works without loop devices\n")
    assert written.status_code == 200, written.text
    read = http.get(f"/files/{new_bucket}/content", params={"path": "src/a.txt"})
    assert read.content == b"works without loop devices\n"

    # when a new bucket is asked for with the image layout
    refused = http.post("/mounts", json={"bucket": refused_bucket, "layout": "image"})
    # then 409 with an explanation, and nothing was made (not even the bucket)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "layout_unavailable"
    assert "Ask for the files layout" in refused.json()["detail"]
    assert not _bucket_exists(refused_bucket)

    # when the existing image volume is mounted (with or without naming its layout)
    for body in ({"bucket": image_bucket}, {"bucket": image_bucket, "layout": "image"}):
        response = http.post("/mounts", json=body)
        # then 409 with an explanation, never a 500, and no mount is left behind
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "layout_unavailable"
        assert "holds an image workspace" in response.json()["detail"] \
            or "Ask for the files layout" in response.json()["detail"]
        assert http.get(f"/mounts/{image_bucket}").status_code == 404
    # and it was refused before its metadata was restored or anything started
    meta = Path(agent_process.env["WELDR_ENV_VOL"]) / "meta" / f"{image_bucket}.db"
    assert not meta.exists()
    assert image_bucket not in " ".join(os.listdir(agent_process.env["WELDR_ENV_VOL"]))

    # and the agent stops cleanly, unmounting the files volume
    http.close()
    assert agent_process.stop() == 0


def _agent_paths(agent, bucket: str) -> system.Paths:
    vol, run = Path(agent.env["WELDR_ENV_VOL"]), Path(agent.env["WELDR_RUNTIME_DIR"]) / "mounts"
    return dataclasses.replace(
        system.paths(bucket, system.IMAGE), meta_db=vol / "meta" / f"{bucket}.db",
        cache_dir=vol / "cache" / bucket, volume_dir=vol / "volumes" / bucket,
        mount_point=Path(agent.env["WORKSPACE_BASE"]) / bucket,
        litestream_socket=run / f"litestream-{bucket}.sock", lock=run / f"{bucket}.lock")


def test_an_image_mount_of_a_machine_that_lost_its_loop_devices_is_marked_failed_at_start_up(
        agent_process, buckets):
    # given an agent that mounted an image volume, then went down with its machine
    bucket = buckets()
    agent_process.env.update({"WORKSPACE_LAYOUT": "image", "LOG_LEVEL": "INFO",
                              "HEALTH_CHECK_TIMEOUT_SECONDS": "20"})
    p = _agent_paths(agent_process, bucket)
    try:
        agent_process.start()  # `serve` migrates its new state database itself
        token = agent_process.manage("create_api_token", "--name", "t").stdout.split()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        mounted = httpx.post(f"{agent_process.url}/mounts", json={"bucket": bucket},
                             headers=headers, timeout=180)
        assert mounted.status_code == 201 and mounted.json()["layout"] == "image", mounted.text
        os.killpg(agent_process.process.pid, signal.SIGKILL)
        agent_process.process.wait()
        agent_process.process = None
        # (its daemons, mounts and loop device went with the machine)
        steps.teardown(p, juicefs_pid=None, litestream_pid=None, grace=5)

        # when it starts again where no loop device can be made
        agent_process.start(prefix=WITHOUT_LOOP_DEVICES)

        # then it started (start-up reconcile did not crash) and the mount is failed, saying why
        row = httpx.get(f"{agent_process.url}/mounts/{bucket}", headers=headers, timeout=30)
        assert row.status_code == 200, row.text
        assert row.json()["status"] == "failed", row.json()
        assert "holds an image workspace" in row.json()["error"], row.json()
        assert httpx.get(f"{agent_process.url}/health", timeout=30).status_code == 200
        # and it stops cleanly
        assert agent_process.stop() == 0
    finally:
        agent_process.stop()
        steps.teardown(p, juicefs_pid=None, litestream_pid=None, grace=5)
