"""Graceful shutdown of a real agent process (`manage.py serve`): SIGTERM → 503 for new work,
hooks run (final sync, unmount), exit 0, nothing left mounted or running; a fresh machine
restores everything; a second signal exits at once."""

from __future__ import annotations

import fcntl
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import PORTS_LOCK, processes_mentioning
from tests.local.conftest import s3_keys
from tests.previews.conftest import http_get, write_node_app
from weldr_agent import runner


def mounted_under(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(path))]


class Client:
    def __init__(self, agent) -> None:  # noqa: ANN001
        token = agent.manage("create_api_token", "--name", "tests").stdout.split()[-1]
        self.http = httpx.Client(base_url=agent.url, timeout=300,
                                 headers={"Authorization": f"Bearer {token}"})

    def mount(self, bucket: str) -> dict:
        response = self.http.post("/mounts", json={"bucket": bucket})
        assert response.status_code == 201, response.text
        return response.json()


def start(agent, tmp_path: Path, mode: str) -> Client:  # noqa: ANN001
    agent.env.update({"WORKSPACE_MODE": mode, "SHUTDOWN_TIMEOUT_SECONDS": "90",
                      "WELDR_BRANCH_SYNC_INTERVAL_SECONDS": "3600",
                      "WELDR_BRANCH_MIN_FREE_MB": "0"})
    agent.start(timeout=120)
    return Client(agent)


def sigterm_and_wait(agent, timeout: float = 120) -> int:  # noqa: ANN001
    agent.process.send_signal(signal.SIGTERM)
    code = agent.process.wait(timeout=timeout)
    agent.process = None
    return code


@contextmanager
def sync_lock_held(tmp_path: Path, bucket: str) -> Iterator[None]:
    """The branch's sync lock held by the test, so that a sync (the shutdown's final backup)
    waits for us: `sync.lock` in the branch's state directory beside the branch directory
    (scripts/branch-common.sh: STATE_DIR), never inside the workspace."""
    states = list(tmp_path.glob(f"**/.meta/*/{bucket}"))
    assert len(states) == 1, states
    with open(states[0] / "sync.lock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        yield


def wipe_machine(tmp_path: Path) -> None:
    """The machine's disks are gone: state database, branch directories, caches. S3 remains."""
    runner.run(["rm", "-rf", "--", tmp_path / "env", tmp_path / "workspace"], timeout=120)


def test_sigterm_in_local_mode_backs_up_and_a_fresh_machine_restores(agent_process, tmp_path,
                                                                    bucket):
    # given a mounted (local) workspace with work in it and a preview running from it
    client = start(agent_process, tmp_path, "local")
    path = Path(client.mount(bucket)["path"])
    (path / "app").mkdir()
    (path / "app" / "index.js").write_text("console.log('v1')\n")
    (path / "notes with spaces.md").write_text("keep me")
    write_node_app(path, label="branch")
    ports = open(PORTS_LOCK, "a")  # noqa: SIM115 (host ports 3000-3019 are machine-global)
    fcntl.flock(ports, fcntl.LOCK_EX)
    preview = client.http.post("/previews/start", json={"bucket": bucket,
                                                         "command": "node server.js"})
    assert preview.status_code == 201, preview.text
    port = preview.json()["port"]
    assert http_get(f"http://127.0.0.1:{port}/")[1] == f"hello from branch on {port}\n"
    # and the branch's sync lock held, so that the final backup waits for us
    with sync_lock_held(tmp_path, bucket):
        # when SIGTERM arrives
        agent_process.process.send_signal(signal.SIGTERM)
        # then new work is refused while the shutdown runs (its backup waits for the lock)
        refused = runner.wait_until(
            lambda: client.http.get("/health").json().get("code") == "shutting_down",
            timeout=60)
        assert refused
        assert runner.wait_until(lambda: processes_mentioning(bucket) != [], timeout=60)
        response = client.http.post("/mounts", json={"bucket": bucket})
        assert response.status_code == 503 and response.json()["code"] == "shutting_down"
    # and it exits 0 once the backup is done
    assert agent_process.process.wait(timeout=180) == 0, agent_process.log.read_text()[-3000:]
    agent_process.process = None
    assert f"branches/{bucket}/tree/app/index.js" in s3_keys(bucket)
    assert processes_mentioning(str(tmp_path)) == []
    # and the preview is gone
    with pytest.raises(AssertionError):
        http_get(f"http://127.0.0.1:{port}/", timeout=1)
    ports.close()
    # when the machine starts fresh, with nothing but S3
    wipe_machine(tmp_path)
    client = start(agent_process, tmp_path, "local")
    mount = client.mount(bucket)
    # then everything written is back
    assert mount["restored"] is True
    restored = Path(mount["path"])
    assert (restored / "app" / "index.js").read_text() == "console.log('v1')\n"
    assert (restored / "notes with spaces.md").read_text() == "keep me"
    # and this second agent (its clean SIGTERM exit is the first agent's, above) shows that a
    # second signal exits at once: one agent start fewer than a test of its own
    second_signal_exits_at_once(agent_process, client, restored, bucket, tmp_path)


def second_signal_exits_at_once(agent_process, client: Client, path: Path,  # noqa: ANN001
                                bucket: str, tmp_path: Path) -> None:
    (path / "work.txt").write_text("unsaved")
    with sync_lock_held(tmp_path, bucket):
        agent_process.process.send_signal(signal.SIGTERM)
        assert runner.wait_until(
            lambda: client.http.get("/health").json().get("code") == "shutting_down",
            timeout=60)
        # (the shutdown's backup has started and waits for the lock)
        assert runner.wait_until(lambda: processes_mentioning(bucket) != [], timeout=60)
        # when a second signal arrives while the shutdown waits
        agent_process.process.send_signal(signal.SIGINT)
        # then the agent exits at once, non-zero, its backup still waiting
        assert agent_process.process.wait(timeout=30) == 128 + signal.SIGINT
        agent_process.process = None
        assert processes_mentioning(bucket) != []
    # the orphaned backup script carries on once the lock is free: it finishes the upload
    assert runner.wait_until(lambda: processes_mentioning(bucket) == [], timeout=120)
    assert f"branches/{bucket}/tree/work.txt" in s3_keys(bucket)


@pytest.mark.timeout(900)
def test_sigterm_in_mount_mode_unmounts_and_a_fresh_machine_restores(agent_process, tmp_path,
                                                                    bucket):
    # given a real JuiceFS mount with a file written through it
    client = start(agent_process, tmp_path, "mount")
    path = Path(client.mount(bucket)["path"])
    (path / "hello.txt").write_text("written before shutdown")
    assert mounted_under(tmp_path / "workspace")
    # when
    assert sigterm_and_wait(agent_process, timeout=240) == 0, \
        agent_process.log.read_text()[-3000:]
    # then nothing is mounted or running
    assert mounted_under(tmp_path / "workspace") == []
    assert processes_mentioning(str(tmp_path)) == []
    # when a fresh machine mounts the bucket again
    wipe_machine(tmp_path)
    client = start(agent_process, tmp_path, "mount")
    mount = client.mount(bucket)
    # then the file is there
    assert mount["restored"] is True
    assert (Path(mount["path"]) / "hello.txt").read_text() == "written before shutdown"
    assert sigterm_and_wait(agent_process, timeout=240) == 0
    assert mounted_under(tmp_path / "workspace") == []
