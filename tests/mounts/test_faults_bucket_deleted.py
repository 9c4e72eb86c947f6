"""A bucket deleted under a live mount: sync fails clearly, unmount completes and leaves
nothing behind, and mounting again never pretends the deleted files are still there."""

from __future__ import annotations

import contextlib
from pathlib import Path

from mounts import system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean
from weldr_agent import s3


def _delete_bucket(bucket: str) -> None:
    """Delete every object, then the bucket itself, on the real S3 server."""
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


def test_bucket_deleted_under_a_mount(api, bucket):
    # given: a mounted bucket with files made durable
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    assert response.status_code == 201, response.json()
    workspace = Path(response.json()["path"])
    (workspace / "kept.txt").write_text("before the deletion")
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    # when: the bucket is deleted under the mount
    _delete_bucket(bucket)
    # then: the user keeps working; writes land in JuiceFS's buffers and cache, reads of cached
    # files still answer (JuiceFS caches blocks locally) or fail with an OSError, never hang
    with contextlib.suppress(OSError):
        (workspace / "after.txt").write_text("written after the deletion")
        (workspace / "kept.txt").read_text()
    # a zero-RPO sync cannot put the staged blocks: a clear error in the error shape, no hang
    response = api.post(f"/mounts/{bucket}/sync")
    assert response.status_code == 500, response.json()
    assert response.json()["code"] == "sync_failed"
    assert "NoSuchBucket" in response.json()["detail"]
    # unmount says it was not clean (the last writes could not reach S3) but tears down
    response = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    assert response.status_code == 500, response.json()
    assert response.json()["code"] == "unmount_failed"
    assert "NoSuchBucket" in response.json()["detail"]
    assert machine_clean(bucket)
    assert not Mount.objects.filter(bucket=bucket).exists()
    # mounting again with this machine's metadata but the data gone: a clear refusal
    p = system.paths(bucket)
    assert p.meta_db.exists()
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["code"] == "volume_gone"
    assert "deleted" in response.json()["detail"]
    assert machine_clean(bucket)
    assert not Mount.objects.filter(bucket=bucket).exists()
    # the orphaned metadata was set aside, not deleted: mounting again starts an empty workspace
    assert not p.meta_db.exists()
    assert list(p.meta_db.parent.glob(f"{p.meta_db.name}.orphaned-*"))
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    assert response.status_code == 201, response.json()
    assert not (Path(response.json()["path"]) / "kept.txt").exists()
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 200
    assert machine_clean(bucket)
