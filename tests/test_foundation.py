"""The service's skeleton: health, documents, errors and agent-token authentication."""

from __future__ import annotations

import socket
import time

import pytest
from django.core.management import call_command

from weldr_agent import health


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


@pytest.fixture(autouse=True)
def fresh_health_answers():
    """Each test sees its own round of checks, not the previous test's cached answers."""
    health.checks.clear()
    yield
    health.checks.clear()


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


@pytest.fixture
def black_hole():
    """A real TCP listener on loopback: the kernel completes connections into its backlog, and
    nothing ever reads or answers them."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_health_answers_in_time_when_a_dependency_hangs(anon, settings, black_hole):
    # given an S3 endpoint that accepts the connection and never answers (boto3 waits 30 s)
    settings.S3_ENDPOINT = black_hole
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    # when
    started = time.monotonic()
    first = anon.get("/health")
    first_took = time.monotonic() - started
    started = time.monotonic()
    second = anon.get("/health")
    second_took = time.monotonic() - started
    # then: both answer within the bound, naming the silent dependency; the second is the cached
    # answer (one S3 check is running, not two)
    assert first.status_code == 503 and first_took < 1.5, first_took
    assert "no answer" in first.json()["checks"]["s3"]
    assert first.json()["checks"]["state_db"] == "ok"
    assert second.json() == first.json() and second_took < 0.5, second_took


def test_health_reuses_its_answers_for_the_cache_window(anon, settings):
    settings.HEALTH_CACHE_SECONDS = 60
    assert anon.get("/health").status_code == 200
    # an endpoint that would fail is not asked again within the window...
    settings.S3_ENDPOINT = "http://127.0.0.1:9"
    assert anon.get("/health").status_code == 200
    # ...and is once the window is over
    settings.HEALTH_CACHE_SECONDS = 0
    assert anon.get("/health").json()["checks"]["s3"] != "ok"


def test_health_reports_capabilities_apart_from_its_checks(anon):
    # given this machine, which offers loop devices (the image layout's)
    body = anon.get("/health").json()
    # then they are reported as a capability, not as a check that could make /health 503
    assert body["capabilities"] == {"loop_devices": "ok"}, body
    assert "loop_devices" not in body["checks"]
    schema = anon.get("/openapi.json").json()["components"]["schemas"]
    assert "loop_devices" in schema["HealthCapabilities"]["properties"]
    assert "capabilities" in schema["Health"]["properties"]
    # (without loop devices: tests/mounts/test_loop_devices.py, a real agent in a namespace
    # without /dev/loop-control, answers 200 with the reason here)


def test_liveness_checks_nothing_and_needs_no_credential(anon, settings):
    settings.S3_ENDPOINT = "http://127.0.0.1:9"
    response = anon.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": settings.VERSION}


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
