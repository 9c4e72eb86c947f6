"""Fixtures for workflow tests: a shared PostgreSQL database, agents running the scripted model,
and SSE / websocket clients that record what they receive."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import REPO, AgentProcess
from tests.servers import free_port, fresh_database
from tests.workflows.llm_server import FAST_RETRY, LLMServer
from weldr_agent import runner

SCRIPTED = "scripted=tests.workflows.scripted.ScriptedProvider"
TERMINAL = ("run.completed", "run.failed")


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A fresh PostgreSQL database (on the test server) for agents that must share data."""
    with fresh_database("wf") as url:
        yield url


@contextmanager
def world_readable_dir(prefix: str) -> Iterator[Path]:
    """A scratch directory others can enter: the stand-in command runner executes as `nobody`,
    and scripts and workspaces must be reachable."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def scripts() -> Iterator[Path]:
    """Where scripted model turns live."""
    with world_readable_dir("wf-scripts-") as directory:
        yield directory


@pytest.fixture
def workspaces() -> Iterator[Path]:
    with world_readable_dir("wf-workspaces-") as directory:
        yield directory


def write_script(scripts: Path, name: str, turns: list[dict[str, Any]]) -> str:
    (scripts / f"{name}.json").write_text(json.dumps({"turns": turns}))
    return f"scripted/{name}"


def requests_seen(scripts: Path, name: str) -> list[dict[str, Any]]:
    path = scripts / f"{name}.requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Agent:
    """An agent process plus an authenticated HTTP client for it."""

    def __init__(self, process: AgentProcess) -> None:
        self.process = process
        self.token = ""
        self.http: httpx.Client | None = None

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> None:
        self.process.start(timeout=120)
        if not self.token:
            output = self.process.manage("create_api_token", "--name",
                                         f"t{secrets.token_hex(4)}").stdout
            self.token = output.strip().splitlines()[-1]
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.token}"})

    def kill(self) -> None:
        """A crash: SIGKILL the whole process group, no shutdown hooks."""
        assert self.process.process is not None
        runner.kill_group(self.process.process.pid, signal.SIGKILL)
        self.process.process.wait()
        self.process.process = None

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        self.process.stop()

    def project_branch(self, bucket: str | None = None) -> tuple[str, str]:
        assert self.http is not None
        project = self.http.post("/projects", json={"name": "demo"}).json()
        bucket = bucket or f"wf-{secrets.token_hex(4)}"
        branch = self.http.post(f"/projects/{project['id']}/branches",
                                json={"name": "main", "bucket": bucket})
        assert branch.status_code == 201, branch.text
        return project["id"], branch.json()["id"]

    def workspace(self, bucket: str) -> Path:
        """Where the agent keeps the bucket's workspace (a mount, or a local branch directory)."""
        assert self.http is not None
        reply = self.http.get(f"/mounts/{bucket}")
        assert reply.status_code == 200, reply.text
        return Path(reply.json()["path"])

    def trigger(self, project_id: str, branch_id: str, model: str,
                text: str = "Build it") -> httpx.Response:
        assert self.http is not None
        return self.http.post("/trigger", json={
            "project_id": project_id, "branch_id": branch_id, "model": model,
            "message": {"content": [{"type": "text", "text": text}]}})

    def run_wait(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        assert self.http is not None
        found: dict[str, Any] = {}

        def finished() -> bool:
            found.update(self.http.get(f"/runs/{run_id}").json())  # type: ignore[union-attr]
            return found["status"] in ("completed", "failed")

        assert runner.wait_until(finished, timeout=timeout, interval=0.2), found
        return found


def agent_env(base: dict[str, str], *, tmp: Path, database: str, scripts: Path,
              workspaces: Path) -> dict[str, str]:
    env = dict(base)
    env.update({
        "DATABASE_URL": database,
        "WORKFLOW_EXTRA_PROVIDERS": SCRIPTED,
        "WELDR_SCRIPTED_DIR": str(scripts),
        "WORKSPACE_BASE": str(workspaces),
        "SSE_KEEPALIVE_SECONDS": "1",
        # Engine tests use local workspaces; test_engine_providers.py mounts real buckets.
        "WORKSPACE_MODE": "local",
        "WORKFLOW_RETRY_BACKOFF_SECONDS": "0.05",
        "WELDR_ENV_VOL": str(tmp / "env"),
        "WELDR_RUNTIME_DIR": str(tmp / "run"),
    })
    return env


# The agents of these fixtures never start a preview: no warm preview sandboxes (two `runc
# create`s per start and their teardown, ~0.3 s of CPU per agent measured on a quiet machine).
NO_PREVIEWS = {"PREVIEW_WARM_POOL": "0"}


@pytest.fixture
def agent_factory(tmp_path: Path, shared_database: str, scripts: Path,
                  workspaces: Path) -> Iterator[Callable[..., Agent]]:
    """Start agents sharing one PostgreSQL database, Redis and S3 (each with its own state)."""
    started: list[Agent] = []

    def make(**overrides: str) -> Agent:
        home = tmp_path / f"agent{len(started)}"
        home.mkdir()
        env = agent_env(dict(os.environ), tmp=home, database=shared_database, scripts=scripts,
                        workspaces=workspaces)
        env["DJANGO_SETTINGS_MODULE"] = "weldr_agent.settings"
        env.update({**NO_PREVIEWS, **overrides})
        agent = Agent(AgentProcess(env, free_port(), home / "agent.log"))
        started.append(agent)
        agent.start()
        return agent

    try:
        yield make
    finally:
        for agent in started:
            agent.stop()


@pytest.fixture
def agent(agent_factory: Callable[[], Agent]) -> Agent:
    return agent_factory()


@contextmanager
def module_agent_started(home: Path, scripts: Path, **overrides: str) -> Iterator[Agent]:
    """One agent with a PostgreSQL database and local workspaces of its own, for a whole module.

    Why: an agent start, token and stop cost ~4 s of CPU (15-20 s under load) and a fresh
    database more; tests that only make their own project, branch and bucket do not need a
    fresh process. Tests about start-up, shutdown, other settings or a crash keep agent_factory.
    """
    with world_readable_dir("wf-workspaces-") as directory, fresh_database("wf") as database:
        env = agent_env(dict(os.environ), tmp=home, database=database, scripts=scripts,
                        workspaces=directory)
        env["DJANGO_SETTINGS_MODULE"] = "weldr_agent.settings"
        env.update({**NO_PREVIEWS, **overrides})
        started = Agent(AgentProcess(env, free_port(), home / "agent.log"))
        try:
            started.start()
            yield started
        finally:
            started.stop()


def unmount_all(agent: Agent) -> None:
    """A test's workspaces are unmounted after it: a shared agent holds MAX_MOUNTS (5) at most,
    local workspaces included."""
    assert agent.http is not None
    for mount in agent.http.get("/mounts").json()["mounts"]:
        reply = agent.http.post("/mounts/unmount", json={"bucket": mount["bucket"]}, timeout=120)
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def module_scripts() -> Iterator[Path]:
    """The scripts directory of a module's shared agent (its WELDR_SCRIPTED_DIR)."""
    with world_readable_dir("wf-scripts-") as directory:
        yield directory


def emptied(directory: Path) -> None:
    """A test's scripts, gates and request logs go with it: a later test reusing a script name
    must not read the earlier test's requests (requests_seen appends to one file per name)."""
    for path in directory.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture(scope="module")
def module_agent(tmp_path_factory: pytest.TempPathFactory,
                 module_scripts: Path) -> Iterator[Agent]:
    """The module's shared agent (see module_agent_started); modules opt in by overriding
    `agent` and `scripts` with shared_agent and shared_scripts."""
    with module_agent_started(tmp_path_factory.mktemp("wf-agent"), module_scripts) as started:
        yield started


@pytest.fixture(scope="module")
def module_llm() -> Iterator[LLMServer]:
    """A provider-protocol server (llm_server.py) for a module whose agent is shared: its
    agent gets the server's addresses in its environment (module_llm_env)."""
    with LLMServer() as server:
        yield server


def module_llm_env(server: LLMServer) -> dict[str, str]:
    """What points a module agent's SDKs at `server`, with retries backing off in ms."""
    return {**server.env(), **FAST_RETRY}


@pytest.fixture
def shared_llm(module_llm: LLMServer) -> Iterator[LLMServer]:
    """The module's provider server for one test, its scripts and requests forgotten before
    and after it (a failed test may leave answers queued)."""
    module_llm.reset()
    yield module_llm
    module_llm.reset()


@pytest.fixture
def shared_agent(module_agent: Agent) -> Iterator[Agent]:
    """The module's agent for one test, its workspaces unmounted after it."""
    yield module_agent
    unmount_all(module_agent)


@pytest.fixture
def shared_scripts(module_scripts: Path) -> Iterator[Path]:
    """The module agent's scripts directory for one test, emptied after it."""
    yield module_scripts
    emptied(module_scripts)


class SSEClient(threading.Thread):
    """Reads GET /events in a thread; `events` fills as frames arrive."""

    def __init__(self, agent: Agent, project_id: str, branch_id: str,
                 last_event_id: int | None = None, stop_on: tuple[str, ...] = TERMINAL,
                 stop_after: int | None = None) -> None:
        super().__init__(daemon=True)
        self.agent, self.params = agent, {"project_id": project_id, "branch_id": branch_id}
        self.headers = {"Authorization": f"Bearer {agent.token}"}
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = str(last_event_id)
        self.stop_on, self.stop_after = stop_on, stop_after
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.connected = threading.Event()
        self.keepalive = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", f"{self.agent.url}/events", params=self.params,
                              headers=self.headers, timeout=httpx.Timeout(60, read=30)) as reply:
                assert reply.status_code == 200, reply.read()
                frame: dict[str, Any] = {}
                for line in reply.iter_lines():
                    if line.startswith(":"):
                        self.comments.append(line)
                        self.connected.set()
                        if line.startswith(": keep-alive"):
                            self.keepalive.set()
                    elif line.startswith("id: "):
                        frame["id"] = int(line[4:])
                    elif line.startswith("event: "):
                        frame["type"] = line[7:]
                    elif line.startswith("data: "):
                        frame["data"] = json.loads(line[6:])
                    elif line == "" and frame:
                        self.events.append(frame)
                        if self._done(frame):
                            return
                        frame = {}
        except BaseException as error:  # surfaced by wait()
            self.error = error
        finally:
            self.connected.set()

    def _done(self, frame: dict[str, Any]) -> bool:
        if self.stop_after is not None:
            return len(self.events) >= self.stop_after
        return frame["type"] in self.stop_on

    def wait(self, timeout: float = 120) -> list[dict[str, Any]]:
        self.join(timeout)
        assert not self.is_alive(), f"SSE client still waiting; got {self.events[-3:]}"
        assert self.error is None, self.error
        return self.events


class WSClient(threading.Thread):
    """A websocket client of /ws/events/…; `resume` is sent as {"last_event_id"} on connect."""

    def __init__(self, agent: Agent, project_id: str, branch_id: str,
                 resume: int | None = None, token: str | None = None,
                 stop_on: tuple[str, ...] = TERMINAL) -> None:
        super().__init__(daemon=True)
        port = agent.process.port
        self.url = f"ws://127.0.0.1:{port}/ws/events/{project_id}/{branch_id}"
        self.token = agent.token if token is None else token
        self.resume, self.stop_on = resume, stop_on
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.close_code: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with ws_connect(self.url, additional_headers=headers, open_timeout=30) as socket:
                if self.resume is not None:
                    socket.send(json.dumps({"last_event_id": self.resume}))
                self.connected.set()
                try:
                    while True:
                        event = json.loads(socket.recv(timeout=60))
                        self.events.append(event)
                        if event.get("type") in self.stop_on:
                            return
                except Exception:
                    self.close_code = socket.close_code
                    if self.close_code is None:
                        raise
        except BaseException as error:
            self.error = error
        finally:
            self.connected.set()

    def wait(self, timeout: float = 120) -> list[dict[str, Any]]:
        self.join(timeout)
        assert not self.is_alive(), f"websocket client still waiting; got {self.events[-3:]}"
        assert self.error is None, self.error
        return self.events


def connected(*clients: SSEClient | WSClient) -> None:
    for client in clients:
        client.start()
    for client in clients:
        assert client.connected.wait(60)


__all__ = ["REPO", "Agent", "SSEClient", "WSClient", "connected", "emptied",
           "module_agent_started", "module_llm_env", "requests_seen", "unmount_all",
           "world_readable_dir", "write_script"]
