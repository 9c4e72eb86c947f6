"""A preview of a real JuiceFS-mounted bucket (S3 server, FUSE), and the unmount guard."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from mounts import services as mount_services
from mounts.models import Mount
from tests.previews.conftest import http_get, write_node_app

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


@pytest.fixture
def mounted(api: APIClient) -> Iterator[Path]:
    bucket = f"pv{settings.INSTANCE_ID}-{secrets.token_hex(4)}"
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    assert response.status_code == 201, response.json()
    try:
        yield Path(response.json()["path"])
    finally:
        if Mount.objects.filter(bucket=bucket).exists():
            mount_services.mount_remove(bucket=bucket, force=True)


def test_node_app_in_a_mounted_bucket_is_served_and_guards_the_unmount(
        api: APIClient, previews: None, mounted: Path) -> None:
    # given: the app lives in the bucket (JuiceFS over the S3 server)
    bucket = mounted.name
    write_node_app(mounted, label="juicefs")

    # when
    response = api.post("/previews/start", {"bucket": bucket,
                                            "command": "echo written > from-app.txt; "
                                                       "exec node server.js"}, format="json")

    # then: served over HTTP from the host, and the app wrote into the bucket as its user
    assert response.status_code == 201, response.json()
    port = response.json()["port"]
    assert http_get(f"http://127.0.0.1:{port}/", timeout=120) == (
        200, f"hello from juicefs on {port}\n")
    assert (mounted / "from-app.txt").read_text() == "written\n"
    assert (mounted / "from-app.txt").stat().st_uid == settings.SANDBOX_UID

    # an unmount is refused while the preview runs ...
    refused = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    assert (refused.status_code, refused.json()["code"]) == (409, "preview_running")
    assert http_get(f"http://127.0.0.1:{port}/")[0] == 200

    # ... and a forced one stops the preview first
    forced = api.post("/mounts/unmount", {"bucket": bucket, "force": True}, format="json")
    assert forced.status_code == 200, forced.json()
    assert api.get(f"/previews/{bucket}").json()["status"] == "stopped"
    with pytest.raises(AssertionError):
        http_get(f"http://127.0.0.1:{port}/", timeout=0.5)
