"""The lease in one process: its record in S3, its rules, the S3 server's conditional writes,
and what a mount does when its lease cannot be renewed (S3 unreachable)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connections

from mounts import lease, services, steps, system
from mounts.models import Mount
from tests.conftest import free_port
from tests.mounts.conftest import machine_clean
from weldr_agent import runner, s3

REPO = Path(__file__).resolve().parents[2]


def _seen(machine: str, age: float, released: bool = False) -> lease.Seen:
    record = lease.Record(machine=machine, host="h", instance="i", token="t",
                          acquired_at="", released=released)
    return lease.Seen(record, '"e"', age)


def test_who_may_take_a_lease_without_force():
    assert lease.free_for(lease.Seen(None, None, 0), "me", 60)
    assert lease.free_for(_seen("me", 1), "me", 60)
    assert lease.free_for(_seen("other", 1, released=True), "me", 60)
    assert lease.free_for(_seen("other", 60), "me", 60)
    assert not lease.free_for(_seen("other", 59.9), "me", 60)


def test_the_age_is_the_servers_clock_only():
    written = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    # the server's Date header, 42 s after it wrote the object: whatever this machine's clock
    assert lease.age_seconds("Thu, 01 Jan 2026 12:00:42 GMT", written) == 42
    assert lease.age_seconds("Thu, 01 Jan 2026 11:59:59 GMT", written) == 0


def test_a_record_round_trips_and_garbage_is_refused():
    record = lease.Record(machine="m", host="h", instance="i", token="t", acquired_at="a",
                          released=True)
    assert lease.record_parse(lease.record_body(record)) == record
    for body in (b"", b"{}", b"[1]", b"not json"):
        with pytest.raises(ValueError):
            lease.record_parse(body)


def test_the_machine_id_survives_on_the_volume_and_a_new_volume_is_a_new_machine(settings,
                                                                                tmp_path):
    settings.WELDR_ENV_VOL = tmp_path / "one"
    first = lease.machine_id()
    assert first == lease.machine_id() and len(first) == 32
    settings.WELDR_ENV_VOL = tmp_path / "two"
    assert lease.machine_id() != first
    # a copy of the first volume on another Fly machine is another writer
    settings.WELDR_ENV_VOL, settings.FLY_MACHINE_ID = tmp_path / "one", "148e0e5b"
    assert lease.machine_id() == f"{first}@148e0e5b"


def test_rclone_serve_s3_ignores_conditional_writes(bucket):
    # Measured: rclone 1.75 accepts a second If-None-Match: * create. The lease then relies on
    # reading back after MOUNT_LEASE_SETTLE_SECONDS (docs/mounts.md says what race remains).
    steps.ensure_bucket(bucket)
    lease._conditional.clear()
    assert lease.conditional_writes(bucket) is False
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=system.LEASE_PROBE_PREFIX)
    assert not listed.get("Contents")  # the probe cleans up after itself


def test_a_forced_takeover_that_the_holders_renewal_overwrites_is_written_again(settings,
                                                                               bucket):
    # rclone serve s3: no conditional writes, so the lease is read back after the settle time.
    settings.MOUNT_LEASE_SETTLE_SECONDS = 0.3
    steps.ensure_bucket(bucket)
    holder = lease.Record(machine="holder", host="h", instance="i", token="theirs",
                          acquired_at=datetime.now(UTC).isoformat(timespec="seconds"))
    lease._write(bucket, holder, etag=None, create=True)
    mine = lease.machine_id()
    overwrites: list[float] = []

    def holders_renewal() -> None:
        # The holder read its own record just before the forced write landed, and writes it
        # right after (its read-then-write straddles the takeover), once.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = lease.read(bucket)
            if seen.record is not None and seen.record.machine == mine:
                lease._write(bucket, holder, etag=None, create=False)
                overwrites.append(time.monotonic())
                return
            time.sleep(0.01)

    renewal = threading.Thread(target=holders_renewal)
    renewal.start()
    try:
        previous = lease.acquire(bucket, force=True)
    finally:
        renewal.join()
        lease.forget(bucket)
    assert overwrites, "the holder's renewal never saw the forced record"
    assert previous is not None and previous.machine == "holder"
    assert lease.read(bucket).record.machine == mine


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_the_lease_in_s3_names_this_machine_and_unmount_releases_it(api, bucket):
    assert api.post("/mounts", {"bucket": bucket}, format="json").status_code == 201
    held = json.loads(s3.client().get_object(Bucket=bucket, Key=system.LEASE_KEY)["Body"].read())
    assert held["machine"] == lease.machine_id() and held["released"] is False
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 200
    released = json.loads(
        s3.client().get_object(Bucket=bucket, Key=system.LEASE_KEY)["Body"].read())
    # kept as the record of the last writer, marked released
    assert released["machine"] == held["machine"] and released["released"] is True
    assert bucket not in lease.held()


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_lease_that_cannot_be_renewed_stops_the_writers_before_it_expires(api, settings,
                                                                          bucket):
    # given a mounted bucket (TTL 3 s, renewal every 1 s: tests/mounts/conftest.py)
    assert api.post("/mounts", {"bucket": bucket}, format="json").status_code == 201
    assert services.mount_leases_renew() == {bucket: "renewed"}
    endpoint = settings.S3_ENDPOINT
    # when S3 stops answering
    settings.S3_ENDPOINT = f"http://127.0.0.1:{free_port()}"
    try:
        # then the mount keeps serving while the lease is still surely ours ...
        assert services.mount_leases_renew() == {bucket: "unreachable"}
        assert Mount.objects.get(bucket=bucket).status == Mount.Status.MOUNTED
        # ... and stops writing before another machine may take the bucket (TTL − renewal)
        deadline = time.monotonic() + 10
        while (outcome := services.mount_leases_renew()) == {bucket: "unreachable"}:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert outcome == {bucket: "expired"}
    finally:
        settings.S3_ENDPOINT = endpoint
    mount = Mount.objects.get(bucket=bucket)
    assert mount.status == Mount.Status.LEASE_LOST and "could not be renewed" in mount.error
    assert machine_clean(bucket)
    # and the mount API says so: no sync, the workspace is gone
    assert api.get(f"/mounts/{bucket}").json()["status"] == "lease_lost"
    assert api.post(f"/mounts/{bucket}/sync").status_code == 404
    # when S3 is back, mounting again takes this machine's own lease back at once
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    assert again.status_code == 201, again.json()


def _state_database_files() -> int:
    """Descriptors this process holds on the state database's files."""
    name = str(connections["default"].settings_dict["NAME"])
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(name)
        except OSError:
            pass  # closed meanwhile
    return count


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_renewing_leases_leaves_no_database_connection_open(api, bucket):
    # given a mounted bucket, renewed once (each renewal runs in threads of its own)
    assert api.post("/mounts", {"bucket": bucket}, format="json").status_code == 201
    assert services.mount_leases_renew() == {bucket: "renewed"}
    before = _state_database_files()

    # when its lease is renewed again and again
    for _ in range(5):
        assert services.mount_leases_renew() == {bucket: "renewed"}

    # then the renewals' threads closed their connections: no file of the state database is
    # left open by them (each left two, until the garbage collector found them)
    assert _state_database_files() <= before


@pytest.mark.parametrize(("ttl", "renew"), [("60", "31"), ("2", "1")])
def test_a_renewal_period_over_half_the_ttl_stops_start_up(tmp_path, ttl, renew):
    env = runner.clean_env({"DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
                            "WELDR_ENV_VOL": str(tmp_path / "env"),
                            "MOUNT_LEASE_TTL_SECONDS": ttl, "MOUNT_LEASE_RENEW_SECONDS": renew,
                            "PATH": os.environ.get("PATH", "")})
    result = runner.run([sys.executable, REPO / "manage.py", "check"], env=env, timeout=60,
                        cwd=REPO, check=False)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "MOUNT_LEASE_" in result.stderr.splitlines()[-1]
