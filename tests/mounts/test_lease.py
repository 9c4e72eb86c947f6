"""One writer per bucket: two real agents (two machines: own volumes, workspaces, runtime dirs)
on one S3 server, each mounting through its own HTTP API.

An agent start is the expensive step here (seconds of CPU each): a machine migrates inside
`serve` (no separate `migrate` process), the machine `b` that is never crashed nor restarted is
shared by the tests that need a steady second machine, and the restart cases are one test."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mounts import lease, steps, system
from tests.conftest import AgentProcess, free_port
from tests.mounts.conftest import bucket_name
from weldr_agent import runner

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# The waiting machine's lease TTL in the expiry test: short, since the test is about the rule
# (409 until the dead holder's lease is TTL old), not the production minute.
TTL = 4
# Long enough that nothing in the other tests can expire by itself: a takeover seen there is the
# force or the restarted holder's own lease, never an expiry.
LONG_TTL = 60


class Machine:
    """An agent process plus what a test needs of it: its token, its paths, its machine id."""

    def __init__(self, root: Path, lease_ttl: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
        env.update({
            "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
            "WELDR_ENV_VOL": str(root / "env"), "WORKSPACE_BASE": str(root / "workspace"),
            "WELDR_RUNTIME_DIR": str(root / "run"), "UPLOAD_DELAY": "2s",
            "LITESTREAM_SYNC_INTERVAL": "1s", "RESTORE_MARGIN_SECONDS": "2",
            "WORKSPACE_LAYOUT": "files", "LOG_LEVEL": "INFO",
            "MOUNT_LEASE_TTL_SECONDS": str(lease_ttl), "MOUNT_LEASE_RENEW_SECONDS": "1",
        })
        self.agent = AgentProcess(env, free_port(), root / "agent.log")
        self.root = root
        self.token = ""
        self.buckets: set[str] = set()

    def start(self) -> None:
        # `serve` migrates a new state database itself; the token is made once it has.
        self.agent.start()
        if not self.token:
            self.token = self.agent.manage("create_api_token", "--name", "t") \
                .stdout.strip().splitlines()[-1]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(method, f"{self.agent.url}{path}", json=body, timeout=180,
                             headers={"Authorization": f"Bearer {self.token}"})

    def mount(self, bucket: str, **extra: Any) -> httpx.Response:
        self.buckets.add(bucket)
        return self.call("POST", "/mounts", {"bucket": bucket, **extra})

    def machine_id(self) -> str:
        return (Path(self.agent.env["WELDR_ENV_VOL"]) / lease.MACHINE_ID_FILE).read_text().strip()

    def paths(self, bucket: str) -> system.Paths:
        base, vol = Path(self.agent.env["WORKSPACE_BASE"]), Path(self.agent.env["WELDR_ENV_VOL"])
        run = Path(self.agent.env["WELDR_RUNTIME_DIR"]) / "mounts"
        return system.Paths(
            bucket=bucket, meta_db=vol / "meta" / f"{bucket}.db",
            cache_dir=vol / "cache" / bucket, juicefs_log=vol / f"juicefs-{bucket}.log",
            litestream_config=vol / f"litestream-{bucket}.yml",
            litestream_log=vol / f"litestream-{bucket}.log",
            litestream_socket=run / f"litestream-{bucket}.sock", lock=run / f"{bucket}.lock",
            mount_point=base / bucket, volume_dir=vol / "volumes" / bucket)

    def crash(self) -> None:
        """The machine dies: its agent and every daemon of its mounts, SIGKILLed."""
        assert self.agent.process is not None
        os.killpg(self.agent.process.pid, signal.SIGKILL)
        self.agent.process.wait()
        self.agent.process = None
        for bucket in self.buckets:
            p = self.paths(bucket)
            for pid in steps.daemons(p, system.JUICEFS) + steps.daemons(p, system.LITESTREAM):
                os.kill(pid, signal.SIGKILL)
            steps.umount(p.mount_point, lazy=True)

    def clean(self) -> None:
        self.agent.stop()
        for bucket in self.buckets:
            steps.teardown(self.paths(bucket), juicefs_pid=None, litestream_pid=None, grace=5)
        self.agent.remove_leftovers()


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Callable[..., Machine]]:
    made: list[Machine] = []

    def make(name: str, *, lease_ttl: int = LONG_TTL) -> Machine:
        made.append(Machine(tmp_path / name, lease_ttl))
        return made[-1]

    try:
        yield make
    finally:
        for machine in made:
            machine.clean()


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """A second machine for the tests that never crash nor restart it (each uses its own
    buckets): started once for the module."""
    machine = Machine(tmp_path_factory.mktemp("steady"), LONG_TTL)
    try:
        machine.start()
        yield machine
    finally:
        machine.clean()


def _in_use(response: httpx.Response, holder: Machine) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "bucket_in_use", body
    assert body["holder"]["machine"] == holder.machine_id(), body
    assert 0 <= body["lease_age_seconds"] < body["lease_ttl_seconds"], body


def test_a_second_machine_waits_for_unmount_or_for_a_dead_holders_lease(machines):
    a, b = machines("a", lease_ttl=TTL), machines("b")
    a.start()
    b.start()
    bucket = bucket_name()

    # given machine A has the bucket mounted and wrote a file
    assert a.mount(bucket).status_code == 201
    (a.paths(bucket).mount_point / "from-a.txt").write_text("a")
    # when machine B mounts it: 409 naming A, the lease young; B runs nothing for it
    _in_use(b.mount(bucket), a)
    assert not steps.daemons(b.paths(bucket))
    assert b.call("GET", f"/mounts/{bucket}").status_code == 404

    # when A unmounts, B mounts it at once, with A's file
    assert a.call("POST", "/mounts/unmount", {"bucket": bucket}).status_code == 200
    mounted = b.mount(bucket)
    assert mounted.status_code == 201, mounted.text
    assert (b.paths(bucket).mount_point / "from-a.txt").read_text() == "a"
    (b.paths(bucket).mount_point / "from-b.txt").write_text("b")
    assert b.call("POST", f"/mounts/{bucket}/sync").status_code == 200

    # when B dies without a goodbye (SIGKILL: its lease stays, not released)
    b.crash()
    # then A gets 409 naming B until B's lease expires ...
    died = time.monotonic()
    _in_use(a.mount(bucket), b)
    while (response := a.mount(bucket)).status_code == 409:
        _in_use(response, b)
        assert time.monotonic() - died < TTL + 10, "the dead holder's lease never expired"
        time.sleep(0.5)
    # ... and then mounts: B's writes are there (A's older local metadata was set aside and the
    # replica restored, since B wrote the bucket after A)
    assert response.status_code == 201, response.text
    # (B's last renewal was at most MOUNT_LEASE_RENEW_SECONDS=1 before it died; the server's
    # clock counts whole seconds)
    assert time.monotonic() - died >= TTL - 2
    assert (a.paths(bucket).mount_point / "from-b.txt").read_text() == "b"
    assert list(a.paths(bucket).meta_db.parent.glob(f"{bucket}.db.stale-*"))


def log_since(machine: Machine, offset: int) -> str:
    """What the machine's agent logged after `offset` (a shared machine's log spans tests)."""
    with open(machine.agent.log, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def test_force_takes_over_at_once_and_the_old_holder_stops_writing(machines, steady):
    a, b = machines("a"), steady
    a.start()
    b_log = b.agent.log.stat().st_size
    bucket = bucket_name()
    assert a.mount(bucket).status_code == 201
    _in_use(b.mount(bucket), a)
    # (the replica exists: a takeover before the holder's first Litestream upload is refused,
    # see docs/mounts.md)
    assert a.call("POST", f"/mounts/{bucket}/sync").status_code == 200

    # when an operator forces B's mount
    started = time.monotonic()
    taken = b.mount(bucket, force=True)
    # then B mounts at once, long before A's 60 s lease would have expired
    assert taken.status_code == 201, taken.text
    assert time.monotonic() - started < 30
    # and A's renewal finds the lease taken: A's writers stop, its mount says lease_lost
    assert runner.wait_until(
        lambda: a.call("GET", f"/mounts/{bucket}").json()["status"] == "lease_lost",
        timeout=15, interval=0.2), a.call("GET", f"/mounts/{bucket}").json()
    body = a.call("GET", f"/mounts/{bucket}").json()
    assert b.machine_id() in body["error"], body
    assert not steps.daemons(a.paths(bucket))
    assert str(a.paths(bucket).mount_point) not in steps.mount_table()
    # and A can neither sync nor remount it while B holds it
    assert a.call("POST", f"/mounts/{bucket}/sync").status_code in (404, 409)
    _in_use(a.mount(bucket), b)
    # B's mount is unaffected and its lease is renewed
    assert b.call("GET", f"/mounts/{bucket}").json()["status"] == "mounted"
    assert "FORCED takeover" in log_since(b, b_log)


def test_a_restarted_agent_takes_its_own_lease_back_and_leaves_a_taken_over_one_alone(
        machines, steady):
    """Both start-up cases of one restart (formerly two tests, each starting its own pair of
    agents): the bucket still leased to this machine is remounted without waiting for the TTL;
    the one an operator forced over to another machine while this one was down is not."""
    a, b = machines("a"), steady
    a.start()
    kept, taken = bucket_name(), bucket_name()
    assert a.mount(kept).status_code == 201
    (a.paths(kept).mount_point / "kept.txt").write_text("kept")
    assert a.mount(taken).status_code == 201
    assert a.call("POST", f"/mounts/{taken}/sync").status_code == 200

    # given A's agent SIGKILLed (its leases not released) and an operator forcing one of its
    # buckets over to B meanwhile
    a.crash()
    assert b.mount(taken, force=True).status_code == 201
    # when A's agent starts again on the same volume, its state database listing both
    a_log = a.agent.log.stat().st_size
    started = time.monotonic()
    a.start()
    # then start-up reconcile remounted the bucket it still holds, under its own lease, well
    # within the TTL
    body = a.call("GET", f"/mounts/{kept}").json()
    assert body["status"] == "mounted", body
    assert time.monotonic() - started < 45
    assert (a.paths(kept).mount_point / "kept.txt").read_text() == "kept"
    # and asking again answers 200 (already mounted), never 409
    assert a.mount(kept).status_code == 200
    # and it did not remount the one taken over: the lease is B's, A's mount says lease_lost
    body = a.call("GET", f"/mounts/{taken}").json()
    assert body["status"] == "lease_lost" and b.machine_id() in body["error"], body
    assert not steps.daemons(a.paths(taken))
    assert "LEASE LOST" in log_since(a, a_log)
    assert b.call("GET", f"/mounts/{taken}").json()["status"] == "mounted"
    # and another machine is still kept out of the bucket A holds
    _in_use(b.mount(kept), a)

    # when A shuts down cleanly (SIGTERM), its lease is released: B mounts at once
    assert a.agent.stop() == 0
    assert b.mount(kept).status_code == 201
    assert (b.paths(kept).mount_point / "kept.txt").read_text() == "kept"
