"""The image layout: an ext4 image inside the JuiceFS volume, loop-mounted at the workspace.

Loop devices are machine-global: every test finds its own by the image's exact path (which
contains the test's own WELDR_ENV_VOL) and the `buckets` fixture's teardown detaches exactly
those, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from django.conf import settings

from mounts import services, steps, system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean, read_tree, write_tree
from weldr_agent import runner


def _mount(api, bucket: str, layout: str | None = "image") -> dict:
    body = {"bucket": bucket, **({"layout": layout} if layout else {})}
    response = api.post("/mounts", body, format="json")
    assert response.status_code in (200, 201), response.json()
    return response.json()


def _image_paths(bucket: str) -> system.Paths:
    return system.paths(bucket, system.IMAGE)


def test_image_mount_write_unmount_remount_keeps_the_files(api, bucket):
    # given a new bucket mounted with the image layout
    mount = _mount(api, bucket)
    assert mount["layout"] == "image"
    p = _image_paths(bucket)
    assert steps.mount_table()[str(p.mount_point)] == "ext4"
    assert steps.mount_table()[str(p.volume_dir)].startswith("fuse.juicefs")
    assert len(steps.loop_devices(p.image)) == 1
    workspace = Path(mount["path"])
    assert workspace == p.mount_point and sorted(os.listdir(workspace)) == []
    assert workspace.stat().st_uid == settings.SANDBOX_UID
    tree = write_tree(workspace)
    # when it is unmounted and mounted again (no layout asked: the volume's own)
    unmounted = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    assert unmounted.status_code == 200, unmounted.json()
    assert machine_clean(bucket)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    # then
    assert again.status_code == 201, again.json()
    assert again.json()["layout"] == "image"
    assert read_tree(Path(again.json()["path"]), tree) == tree
    assert api.get("/mounts").json()["mounts"][0]["layout"] == "image"


def test_the_setting_picks_the_layout_of_new_volumes_only(api, settings, buckets):
    # given WORKSPACE_LAYOUT=image: a new volume gets it without asking
    settings.WORKSPACE_LAYOUT = "image"
    image_bucket, files_bucket = buckets(), buckets()
    assert _mount(api, image_bucket, layout=None)["layout"] == "image"
    # and a files volume made while the setting said files ...
    settings.WORKSPACE_LAYOUT = "files"
    (Path(_mount(api, files_bucket, layout=None)["path"]) / "a.txt").write_text("a")
    for name in (image_bucket, files_bucket):
        assert api.post("/mounts/unmount", {"bucket": name}, format="json").status_code == 200
    # when both are mounted again under the opposite setting
    settings.WORKSPACE_LAYOUT = "image"
    files_again = _mount(api, files_bucket, layout=None)
    settings.WORKSPACE_LAYOUT = "files"
    image_again = _mount(api, image_bucket, layout=None)
    # then each keeps its own
    assert files_again["layout"] == "files"
    assert (Path(files_again["path"]) / "a.txt").read_text() == "a"
    assert image_again["layout"] == "image"
    assert steps.mount_table()[image_again["path"]] == "ext4"


def test_asking_for_the_other_layout_is_409(api, buckets):
    image_bucket, files_bucket = buckets(), buckets()
    _mount(api, image_bucket, layout="image")
    # (a files volume gets its layout with its first entry: an empty one has none yet)
    (Path(_mount(api, files_bucket, layout="files")["path"]) / "a.txt").write_text("a")
    # while mounted
    for name, other in ((image_bucket, "files"), (files_bucket, "image")):
        response = api.post("/mounts", {"bucket": name, "layout": other}, format="json")
        assert response.status_code == 409, response.json()
        assert response.json()["code"] == "layout_mismatch"
    # and when not mounted: found in the volume itself; nothing is left half-mounted
    for name, other in ((image_bucket, "files"), (files_bucket, "image")):
        assert api.post("/mounts/unmount", {"bucket": name}, format="json").status_code == 200
        response = api.post("/mounts", {"bucket": name, "layout": other}, format="json")
        assert response.status_code == 409, response.json()
        assert response.json()["code"] == "layout_mismatch"
        assert machine_clean(name)
        assert not Mount.objects.filter(bucket=name).exists()
    bad = api.post("/mounts", {"bucket": buckets(), "layout": "zfs"}, format="json")
    assert bad.status_code == 400, bad.json()


def _kill_juicefs(bucket: str) -> None:
    p = _image_paths(bucket)
    # The watchdog (the lower pid) first: killed after its server, it would start a new one.
    for pid in steps.daemons(p, system.JUICEFS):
        os.kill(pid, signal.SIGKILL)
    assert runner.wait_until(lambda: not steps.answers(p.volume_point), timeout=30)


def _leaked(device: str, image: Path) -> bool:
    """Is this loop device still bound to our image: by its path, or by the path the image has
    inside a lazily detached JuiceFS mount?"""
    try:
        name = Path(f"/sys/block/{Path(device).name}/loop/backing_file").read_text().strip()
    except OSError:
        return False
    return name in (str(image), f"/{system.IMAGE_DIR}/{system.IMAGE_NAME}")


def test_juicefs_killed_under_a_mounted_image_is_remounted_then_unmounts_clean(api, bucket):
    # given a synced image workspace
    workspace = Path(_mount(api, bucket)["path"])
    (workspace / "kept.txt").write_text("still here")
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    p = _image_paths(bucket)
    [device] = steps.loop_devices(p.image)
    # when JuiceFS dies under the loop device
    _kill_juicefs(bucket)
    # then the mount is reported unhealthy and reconcile brings it back, the journal replayed
    assert services.mount_reconcile()[bucket] == "remounted"
    mount = Mount.objects.get(bucket=bucket)
    assert mount.status == Mount.Status.MOUNTED and mount.layout == "image"
    assert (workspace / "kept.txt").read_text() == "still here"
    (workspace / "after.txt").write_text("writable")
    assert len(steps.loop_devices(p.image)) == 1
    assert steps.daemons(p, system.LITESTREAM) == [mount.litestream_pid]
    # and the old loop device is not left bound to the dead image (the number may be reused)
    assert device in steps.loop_devices(p.image) or not _leaked(device, p.image)
    # when it is unmounted: nothing is left, no loop device, no mount, no daemon
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 200
    assert machine_clean(bucket)


def test_juicefs_killed_then_unmount_leaves_nothing(api, bucket):
    workspace = Path(_mount(api, bucket)["path"])
    (workspace / "x.txt").write_text("x")
    p = _image_paths(bucket)
    [device] = steps.loop_devices(p.image)
    _kill_juicefs(bucket)
    # a sync cannot pretend: 500 sync_failed
    with contextlib.suppress(OSError):
        (workspace / "y.txt").write_text("y")  # the ext4 meets the dead image: read-only
    synced = api.post(f"/mounts/{bucket}/sync")
    assert synced.status_code == 500, synced.json()
    assert synced.json()["code"] == "sync_failed"
    assert Mount.objects.get(bucket=bucket).status == Mount.Status.MOUNTED
    assert not services._healthy(Mount.objects.get(bucket=bucket))
    response = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    # the last writes could not be made durable: said so, and torn down anyway
    assert response.status_code in (200, 500), response.json()
    assert machine_clean(bucket)
    assert not _leaked(device, p.image)
    assert not Mount.objects.filter(bucket=bucket).exists()


def test_a_crash_between_attach_and_mount_leaves_nothing_that_blocks(api, bucket):
    # given an image volume, then a crash that left its loop device attached and no ext4
    _mount(api, bucket)
    p = _image_paths(bucket)
    steps.umount(p.mount_point)
    assert runner.wait_until(lambda: not steps.loop_devices(p.image), timeout=30)
    # (the `buckets` fixture's teardown detaches it even if this test fails)
    stale = runner.run(system.losetup_attach_argv(p.image, direct_io=False),
                       timeout=60).stdout.strip()
    assert steps.loop_devices(p.image) == [stale]
    # when reconcile runs
    assert services.mount_reconcile()[bucket] == "remounted"
    # then the stale device was detached and exactly one new one serves the ext4
    [serving] = steps.loop_devices(p.image)
    assert serving == stale or not _leaked(stale, p.image)
    assert steps.mount_table()[str(p.mount_point)] == "ext4"
    assert steps.image_mounted(p)


def test_reconcile_cleans_an_image_mount_no_row_accounts_for(bucket):
    mount, _ = services.mount_create(bucket=bucket, layout="image")
    Mount.objects.filter(pk=mount.pk).delete()  # the state database lost the row
    services.mount_reconcile()
    assert machine_clean(bucket)


def test_files_api_and_the_sandbox_user_work_on_an_image_workspace(api, bucket):
    workspace = Path(_mount(api, bucket)["path"])
    raw = bytes(range(256)) * 64
    written = api.put(f"/files/{bucket}/content?path=src/blob.bin", data=raw,
                      content_type="application/octet-stream")
    assert written.status_code == 200, written.content
    assert (workspace / "src/blob.bin").read_bytes() == raw
    listing = api.get(f"/files/{bucket}?path=src").json()
    assert [(e["name"], e["size"]) for e in listing["entries"]] == [("blob.bin", len(raw))]
    deleted = api.delete(f"/files/{bucket}/content?path=src/blob.bin")
    assert deleted.status_code == 204 and not (workspace / "src/blob.bin").exists()
    uid = str(settings.SANDBOX_UID)
    runner.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c",
                "mkdir -p node_modules/x && echo ok > node_modules/x/index.js"],
               cwd=workspace, timeout=30)
    assert (workspace / "node_modules/x/index.js").stat().st_uid == settings.SANDBOX_UID


def test_the_layout_is_in_the_openapi_schema(anon):
    document = anon.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    create = schemas["MountCreateRequest"]
    assert "layout" in create["properties"] and "layout" not in create["required"]
    assert "layout" in schemas["Mount"]["properties"]
    assert set(schemas["LayoutEnum"]["enum"]) == {"files", "image"}
    assert "layout_mismatch" in document["paths"]["/mounts"]["post"]["responses"]["409"][
        "description"]


def test_the_layout_is_recorded_in_s3_and_an_unrecorded_image_volume_is_still_image(api, settings,
                                                                                    buckets):
    from weldr_agent import s3

    image_bucket, files_bucket = buckets(), buckets()
    _mount(api, image_bucket, layout="image")
    _mount(api, files_bucket, layout="files")  # empty: its layout is recorded all the same
    for name, layout in ((image_bucket, b"image"), (files_bucket, b"files")):
        body = s3.client().get_object(Bucket=name, Key=system.LAYOUT_KEY)["Body"].read()
        assert body == layout
        assert api.post("/mounts/unmount", {"bucket": name}, format="json").status_code == 200
    # an empty files volume keeps its layout although its root says nothing yet
    assert api.post("/mounts", {"bucket": files_bucket, "layout": "image"},
                    format="json").status_code == 409
    # when the image volume's record is missing (a volume made before it existed)
    s3.client().delete_object(Bucket=image_bucket, Key=system.LAYOUT_KEY)
    settings.WORKSPACE_LAYOUT = "files"
    again = _mount(api, image_bucket, layout=None)
    # then the agent-made image is recognised from the metadata, and the record written again
    assert again["layout"] == "image"
    assert steps.mount_table()[again["path"]] == "ext4"
    assert s3.client().get_object(Bucket=image_bucket,
                                  Key=system.LAYOUT_KEY)["Body"].read() == b"image"
