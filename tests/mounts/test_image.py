"""The image layout: an ext4 image inside the JuiceFS volume, loop-mounted at the workspace."""

from __future__ import annotations

from pathlib import Path

from mounts import steps, system
from tests.mounts.conftest import machine_clean, read_tree, write_tree


def test_image_mount_write_unmount_remount_keeps_the_files(api, bucket):
    # given a new bucket mounted with the image layout
    created = api.post("/mounts", {"bucket": bucket, "layout": "image"}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["layout"] == "image"
    p = system.paths(bucket, system.IMAGE)
    assert steps.mount_table()[str(p.mount_point)] == "ext4"
    assert steps.loop_devices(p.image)
    tree = write_tree(Path(created.json()["path"]))
    # when it is unmounted and mounted again (no layout asked: the volume's own)
    unmounted = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    assert unmounted.status_code == 200, unmounted.json()
    assert machine_clean(bucket)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then
    assert again.status_code == 201, again.json()
    assert again.json()["layout"] == "image"
    assert read_tree(Path(again.json()["path"]), tree) == tree
