"""The agent process: reconcile at start-up, unmount everything (with a final sync) at shutdown."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from mounts import steps, system

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def agent(agent_process, buckets):
    agent_process.env.update({"UPLOAD_DELAY": "2s", "LITESTREAM_SYNC_INTERVAL": "1s",
                              "RESTORE_MARGIN_SECONDS": "2", "LOG_LEVEL": "INFO",
                              "WELDR_RUNTIME_DIR": agent_process.env["WELDR_RUNTIME_DIR"]})
    agent_process.bucket = buckets()
    yield agent_process
    # whatever happened: stop this agent's daemons and mounts (found by their tags)
    agent_process.stop()
    _cleanup(agent_process)


def _paths(agent, bucket: str) -> system.Paths:
    base = Path(agent.env["WORKSPACE_BASE"])
    vol = Path(agent.env["WELDR_ENV_VOL"])
    run = Path(agent.env["WELDR_RUNTIME_DIR"]) / "mounts"
    return system.Paths(
        bucket=bucket, meta_db=vol / "meta" / f"{bucket}.db", cache_dir=vol / "cache" / bucket,
        juicefs_log=vol / f"juicefs-{bucket}.log",
        litestream_config=vol / f"litestream-{bucket}.yml",
        litestream_log=vol / f"litestream-{bucket}.log",
        litestream_socket=run / f"litestream-{bucket}.sock", lock=run / f"{bucket}.lock",
        mount_point=base / bucket, volume_dir=vol / "volumes" / bucket,
    )


def _cleanup(agent) -> None:
    p = _paths(agent, agent.bucket)
    steps.teardown(p, juicefs_pid=None, litestream_pid=None, grace=5)


def _token(agent) -> str:
    """A token of a started agent (`serve` migrated its new state database itself)."""
    return agent.manage("create_api_token", "--name", "t").stdout.strip().splitlines()[-1]


def test_shutdown_unmounts_with_a_final_sync_and_startup_reconciles(agent):
    bucket = agent.bucket
    p = _paths(agent, bucket)

    # given a running agent with a mounted bucket
    agent.start()
    headers = {"Authorization": f"Bearer {_token(agent)}"}
    response = httpx.post(f"{agent.url}/mounts", json={"bucket": bucket}, headers=headers,
                          timeout=180)
    assert response.status_code == 201, response.text
    (p.mount_point / "a.txt").write_text("before shutdown")

    # when the agent is stopped (SIGTERM, as fly.io does)
    assert agent.stop() == 0
    # then nothing of the mount is left and the write reached S3 (a restore will find it)
    assert not steps.daemons(p) and str(p.mount_point) not in steps.mount_table()
    log = agent.log.read_text()
    assert f"unmounted {bucket}" in log

    # given an agent that crashed (SIGKILL) with its daemons, mount and state left behind
    agent.start()
    assert httpx.post(f"{agent.url}/mounts", json={"bucket": bucket}, headers=headers,
                      timeout=180).status_code == 201
    assert (p.mount_point / "a.txt").read_text() == "before shutdown"
    os.killpg(agent.process.pid, signal.SIGKILL)
    agent.process.wait()
    agent.process = None
    for pid in steps.daemons(p, system.JUICEFS):  # the workspace died with the machine's agent
        os.kill(pid, signal.SIGKILL)

    # when the agent starts again
    agent.start()
    # then start-up reconcile has remounted the bucket before serving
    body = httpx.get(f"{agent.url}/mounts/{bucket}", headers=headers, timeout=30).json()
    assert body["status"] == "mounted", body
    assert (p.mount_point / "a.txt").read_text() == "before shutdown"
    assert len(steps.daemons(p, system.LITESTREAM)) == 1
