"""Machine loss: everything local is deleted, the workspace comes back from S3 alone."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from mounts import services, steps, system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean, read_tree, write_tree
from weldr_agent import runner, s3

LAYOUTS = pytest.mark.parametrize("layout", [system.FILES, system.IMAGE])


def lose_the_machine(bucket: str, layout: str = system.FILES) -> None:
    """No goodbyes: SIGKILL every daemon, drop the mounts (an image's ext4 was never cleanly
    unmounted; its loop device goes with it, as in a reboot) and JuiceFS's memory cgroup,
    delete WELDR_ENV_VOL and the workspace."""
    p = system.paths(bucket, layout)
    for pid in steps.daemons(p, system.JUICEFS) + steps.daemons(p, system.LITESTREAM):
        os.kill(pid, signal.SIGKILL)
    assert runner.wait_until(lambda: not steps.daemons(p), timeout=30)
    steps.umount(p.mount_point, lazy=True)
    if layout == system.IMAGE:
        assert runner.wait_until(lambda: not steps.loop_devices(p.image), timeout=30)
        steps.umount(p.volume_dir, lazy=True)
    steps.memory_release(p)
    Mount.objects.filter(bucket=bucket).delete()
    shutil.rmtree(settings.WELDR_ENV_VOL)
    shutil.rmtree(settings.WORKSPACE_BASE)
    settings.WELDR_ENV_VOL.mkdir(parents=True)
    assert machine_clean(bucket)
    # The new machine (a new volume, a new machine id) may take the bucket once the lost
    # machine's lease has expired (docs/mounts.md, "One writer per bucket").
    time.sleep(settings.MOUNT_LEASE_TTL_SECONDS + 1.5)


@LAYOUTS
def test_machine_loss_after_a_zero_rpo_sync_restores_every_file(api, bucket, layout):
    # given a workspace with a source tree, made durable with the sync endpoint
    mount = api.post("/mounts", {"bucket": bucket, "layout": layout}, format="json").json()
    tree = write_tree(Path(mount["path"]))
    synced = api.post(f"/mounts/{bucket}/sync")
    assert synced.status_code == 200, synced.json()
    # when the machine is lost and the bucket is mounted again (no layout asked: the volume's)
    lose_the_machine(bucket, layout)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then every file is back, byte for byte, and the mount says it was restored
    assert again.status_code == 201, again.json()
    assert again.json()["restored"] is True and again.json()["layout"] == layout
    assert read_tree(Path(again.json()["path"]), tree) == tree


def _staging_empty(bucket: str) -> bool:
    cache = system.paths(bucket).cache_dir
    return not any(path.is_file() for path in cache.glob("*/rawstaging/**/*"))


@LAYOUTS
def test_machine_loss_after_the_sync_window_restores_every_file(api, bucket, layout):
    # given a tree written, then the upload delay and Litestream's interval waited out
    # (UPLOAD_DELAY=2s, LITESTREAM_SYNC_INTERVAL=1s, RESTORE_MARGIN_SECONDS=2 in conftest).
    # sync -f: what the kernel's writeback does by itself within ~35 s (for an image: pushes
    # the ext4's dirty pages into the image file)
    mount = api.post("/mounts", {"bucket": bucket, "layout": layout}, format="json").json()
    workspace = Path(mount["path"])
    tree = write_tree(workspace, files=60)
    runner.run(["sync", "-f", str(workspace)], timeout=60)
    written = time.monotonic()
    assert runner.wait_until(lambda: _staging_empty(bucket), timeout=180, interval=0.5)
    window = system.duration_seconds(settings.UPLOAD_DELAY) + settings.RESTORE_MARGIN_SECONDS \
        + 2 * system.duration_seconds(settings.LITESTREAM_SYNC_INTERVAL)
    time.sleep(max(0.0, written + window - time.monotonic()))
    # when
    lose_the_machine(bucket, layout)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then
    assert again.status_code == 201, again.json()
    assert again.json()["restored"] is True
    assert read_tree(Path(again.json()["path"]), tree) == tree


def test_a_volume_whose_replica_vanished_is_never_formatted_over(api, bucket):
    mount = api.post("/mounts", {"bucket": bucket}, format="json").json()
    (Path(mount["path"]) / "precious.txt").write_text("do not lose me")
    api.post(f"/mounts/{bucket}/sync")
    lose_the_machine(bucket)
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="weldr-meta/")
    for item in listed.get("Contents", []):
        client.delete_object(Bucket=bucket, Key=item["Key"])
    # when
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    # then: a clear failure, the data untouched, nothing half-mounted
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "metadata_replica_missing"
    assert "refusing to format" in response.json()["detail"]
    assert client.list_objects_v2(Bucket=bucket, Prefix="workspace/chunks/")["KeyCount"] >= 1
    assert machine_clean(bucket)
    assert not Mount.objects.filter(bucket=bucket).exists()


def test_a_process_crash_keeps_staged_writes_and_remounts_them(bucket):
    # given writes still staged locally (upload delay not over) when JuiceFS dies
    mount, _ = services.mount_create(bucket=bucket)
    workspace = Path(mount.path)
    tree = write_tree(workspace, files=20)
    runner.run(["sync", "-f", str(workspace)], timeout=60)
    p = system.paths(bucket)
    for pid in steps.daemons(p, system.JUICEFS):
        os.kill(pid, signal.SIGKILL)
    assert runner.wait_until(lambda: not steps.answers(p.mount_point), timeout=30)
    # when reconcile remounts it with the same metadata and cache folder
    assert services.mount_reconcile()[bucket] == "remounted"
    # then the staged blocks are read back (and get uploaded from the same cache folder)
    assert read_tree(workspace, tree) == tree
