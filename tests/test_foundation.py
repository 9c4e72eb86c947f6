"""The service's skeleton: health, documents, errors and agent-token authentication."""

from __future__ import annotations

import pytest
from django.core.management import call_command


def test_health_reports_every_check(anon):
    response = anon.get("/health")
    body = response.json()
    assert set(body["checks"]) == {"state_db", "shared_db", "channel_layer", "s3", "fuse",
                                   "oci_runtime"}
    assert body["checks"]["state_db"] == "ok"
    assert body["checks"]["shared_db"] == "ok"
    assert body["checks"]["s3"] == "ok"
    assert body["checks"]["fuse"] == "ok"
    assert body["checks"]["oci_runtime"] == "ok", body
    assert body["oci_runtime"] in {"crun", "runc"}
    assert response.status_code == 200, body


def test_health_is_503_naming_a_failed_check(anon, settings):
    # given an S3 endpoint nobody listens on
    settings.S3_ENDPOINT = "http://127.0.0.1:9"
    # when
    response = anon.get("/health")
    # then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["s3"] != "ok" and "S3" in body["checks"]["s3"]


def test_openapi_and_docs_are_public(anon):
    schema = anon.get("/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.")
    assert "/health" in schema.json()["paths"]
    docs = anon.get("/docs")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_unknown_endpoint_is_json_404(anon):
    response = anon.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "No such endpoint.", "code": "not_found"}


def test_create_api_token_prints_token_last_and_stores_only_a_hash(capsys):
    call_command("create_api_token", "--name", "ops")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    from weldr_agent.models import ApiToken

    row = ApiToken.objects.get(name="ops")
    assert token.startswith("wat_") and len(token) > 40
    assert token not in (row.token_hash, row.prefix)


def test_duplicate_token_name_is_refused():
    from django.core.management.base import CommandError

    call_command("create_api_token", "--name", "dup")
    with pytest.raises(CommandError, match="exists already"):
        call_command("create_api_token", "--name", "dup")


def test_every_middleware_is_async_capable(settings):
    # One sync-only middleware makes Django run the whole chain in a worker thread, which puts
    # two thread hops on every request of the async views (exec); docs/exec.md.
    from django.utils.module_loading import import_string

    sync_only = [path for path in settings.MIDDLEWARE
                 if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []
