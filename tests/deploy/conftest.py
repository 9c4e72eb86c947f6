"""The built image, booted as Fly boots it: fixtures for tests/deploy.

A container here is `podman run` of the image that `scripts/build-image.sh` (`make image`)
built: privileged, its volume at WELDR_ENV_VOL (/dev/weldr_env_vol, a fresh host folder per
"machine"), the API (8080) and one preview port published on 127.0.0.1 only, every setting from
an env file, and the image's own CMD as PID 1. Its network is slirp4netns (a namespace of its
own); `allow_host_loopback` lets it reach the test run's PostgreSQL, Redis and S3 server, which
listen on this machine's loopback, at 10.0.2.2.

Every container a test starts is stopped (SIGTERM first, as Fly does) and removed afterwards,
whatever happened, and its database dropped; a JuiceFS killed under its own loop-mounted image has
its orphaned FUSE connection aborted, so that neither it nor the loop device is left stuck.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.auth.conftest import DEPLOYED, node
from tests.servers import free_port, fresh_bucket, fresh_database
from weldr_agent import runner

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/weldr-agent:test"
# The host as the container sees it: slirp4netns's gateway, forwarded to this machine's loopback.
HOST_FROM_CONTAINER = "10.0.2.2"
PREVIEW_PORT = 3000
# fly.toml: kill_timeout (Fly's wait between SIGTERM and SIGKILL), the /health check's grace.
KILL_TIMEOUT = 60
HEALTH_GRACE = 60


def podman(*args: str, timeout: float = 120, check: bool = True) -> runner.Completed:
    """podman with runc: crun cannot start a container on this cgroup v1 hybrid host."""
    return runner.run(["podman", "--runtime", "runc", *args], timeout=timeout, check=check)


def _ulimits() -> list[str]:
    """Limits podman may set. Without CAP_SYS_RESOURCE (a sandboxed CI) runc cannot raise a
    hard limit, and podman's defaults (1048576 files and processes) are above ours: pass our own
    file limit, and at most the process limit conmon was seen running under here (32768)."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    processes = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"]


def _from_container(url: str) -> str:
    """The same URL with a loopback host replaced by the address the container reaches it at."""
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost"}:
        raise AssertionError(f"the container cannot reach {url}: not on this machine's loopback")
    netloc = parts.netloc.replace(parts.hostname, HOST_FROM_CONTAINER, 1)
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="session")
def image() -> str:
    """`make image`'s script, as CI runs it: the base and the dependency layer are reused when
    stored, so this costs seconds after the first build on a machine."""
    started = time.monotonic()
    env = runner.clean_env({"SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE", "")})
    built = runner.run([REPO / "scripts" / "build-image.sh", "--tag", IMAGE], timeout=1800,
                       env=env, cwd=REPO)
    print(f"\nimage: {built.stdout.strip()} built in {time.monotonic() - started:.1f}s")
    return IMAGE


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A database of its own on the test run's PostgreSQL, shared by every machine of a test (as
    the platform's database outlives machines), dropped afterwards."""
    with fresh_database("weldr_deploy") as url:
        # The platform owns Better Auth's tables: the real package makes them, configured as the
        # Weldr platform deploys it (an agent in production creates none of them itself).
        node("--migrate", database=url, config=DEPLOYED)
        yield url


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh bucket on the test run's S3 server, emptied and removed afterwards."""
    with fresh_bucket("deploy") as name:
        yield name


@dataclass
class Machine:
    """One container of the image: a Fly Machine with its own volume."""

    name: str
    volume: Path
    env_file: Path
    api_port: int = field(default_factory=free_port)
    preview_port: int = field(default_factory=free_port)
    # FUSE connections that existed before this machine booted: never this machine's.
    fuse_before: set[int] = field(default_factory=set)
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def boot(self, image: str) -> None:
        """`podman run` as Fly runs a Machine; `started_at` is when the container started."""
        podman("create", "--name", self.name, "--privileged", *_ulimits(),
               "--network", "slirp4netns:allow_host_loopback=true",
               "--publish", f"127.0.0.1:{self.api_port}:8080",
               "--publish", f"127.0.0.1:{self.preview_port}:{PREVIEW_PORT}",
               "--volume", f"{self.volume}:/dev/weldr_env_vol",
               "--env-file", str(self.env_file), image)
        self.started_at = time.monotonic()
        podman("start", self.name)

    def exec(self, *argv: str, timeout: float = 120) -> runner.Completed:
        return podman("exec", self.name, *argv, timeout=timeout)

    def token(self) -> str:
        """An agent token made the way an operator makes one: the management command, run in
        the container (its environment, its state database on the volume)."""
        made = self.exec("/app/.venv/bin/python", "manage.py", "create_api_token", "--name",
                         "deploy-test")
        return made.stdout.split()[-1]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300,
                            headers={"Authorization": f"Bearer {self.token()}"})

    def state(self) -> dict[str, str]:
        shown = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        status, code = shown.stdout.split()
        return {"status": status, "exit_code": code}

    def logs(self, tail: int = 6000) -> str:
        shown = podman("logs", self.name, check=False)
        return (shown.stdout + shown.stderr)[-tail:]

    def remove(self) -> None:
        """Stop the container as Fly would (SIGTERM, SIGKILL after kill_timeout) and remove it,
        keeping its logs beside the volume (pytest keeps tmp_path)."""
        shown = podman("logs", self.name, check=False)
        apps = "".join(f"\n== {log}\n{log.read_text(errors='replace')[-6000:]}"
                       for log in sorted(self.volume.glob("apps/*/*.log")))
        self.volume.with_suffix(".log").write_text(shown.stdout + shown.stderr + apps)
        podman("stop", "--time", str(KILL_TIMEOUT), self.name, timeout=KILL_TIMEOUT + 60,
               check=False)
        try:
            podman("rm", "--force", "--time", "0", self.name, timeout=60, check=False)
        finally:
            _abort_orphaned_fuse(self.fuse_before)
        podman("rm", "--force", "--time", "0", self.name, timeout=60, check=False)
        shutil.rmtree(self.volume, ignore_errors=True)


def fuse_control() -> Path:
    """fusectl's folder (mounted here if it is not): one entry per FUSE connection."""
    control = Path("/sys/fs/fuse/connections")
    if not any(control.iterdir()):
        runner.run(["mount", "-t", "fusectl", "fusectl", control], timeout=30, check=False)
    return control


def _fuse_in_use() -> set[int]:
    """The FUSE connections (device minors) mounted in any living mount namespace."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        try:
            table = (entry / "mountinfo").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        for line in table.splitlines():
            fields = line.split()
            kind = fields[fields.index("-") + 1]
            if kind == "fuse" or kind.startswith("fuse."):
                found.add(int(fields[2].split(":")[1]))
    return found


def _stuck(connections: set[int]) -> set[int]:
    control = fuse_control()
    stuck = set()
    for connection in connections:
        try:
            if int((control / str(connection) / "waiting").read_text()) > 0:
                stuck.add(connection)
        except (OSError, ValueError):
            pass  # gone
    return stuck


def _abort_orphaned_fuse(before: set[int]) -> None:
    """A container killed with its workspace mounted (SIGKILL, a failed test) leaves JuiceFS
    stuck: its daemon dies while the kernel, writing back the loop-mounted image that lives on
    it, waits for that very daemon, so the process never ends and the loop device stays. Abort
    the connections made since the container booted that no mount namespace uses any more and
    that stay stuck (an orphan still draining answers within seconds)."""
    candidates = _stuck({int(entry.name) for entry in fuse_control().iterdir()
                         if entry.name.isdigit()} - before - _fuse_in_use())
    if not candidates:
        return
    time.sleep(3)
    for connection in _stuck(candidates) - _fuse_in_use():
        try:
            (fuse_control() / str(connection) / "abort").write_text("1")
        except OSError:
            pass  # gone by itself meanwhile


@pytest.fixture
def machines(tmp_path: Path, shared_database: str, image: str,
             bucket: str) -> Iterator[Callable[[], Machine]]:
    """A factory of machines sharing one env file (the app's secrets and [env]); each has a new,
    empty volume. Teardown removes every container, whatever happened, before the bucket
    (which this fixture asks for only to be torn down after it) is emptied."""
    env_file = tmp_path / "agent.env"
    env_file.write_text(_env_file(shared_database))
    env_file.chmod(0o600)
    made: list[Machine] = []

    def make() -> Machine:
        volume = tmp_path / f"volume-{len(made)}"
        volume.mkdir()
        before = {int(entry.name) for entry in fuse_control().iterdir() if entry.name.isdigit()}
        made.append(Machine(name=f"weldr-deploy-{os.getpid()}-{secrets.token_hex(3)}",
                            volume=volume, env_file=env_file, fuse_before=before))
        return made[-1]

    try:
        yield make
    finally:
        for machine in made:
            machine.remove()


def _env_file(shared_database: str) -> str:
    """fly.toml's [env] and the secrets `fly secrets set` would give, pointing at this test
    run's services. The LLM keys are placeholders: nothing here calls a provider."""
    settings = {
        "NODE_ENV": "production",
        "PORT": "8080",
        "WELDR_ENV_VOL": "/dev/weldr_env_vol",
        "WORKSPACE_BASE": "/workspace",
        "SHUTDOWN_TIMEOUT_SECONDS": "60",
        "DATABASE_URL": _from_container(shared_database),
        "REDIS_URL": _from_container(os.environ["REDIS_URL"]),
        "CHANNEL_LAYER_PREFIX": f"weldrdeploy{os.getpid()}",
        "S3_ENDPOINT": _from_container(os.environ["S3_ENDPOINT"]),
        "S3_ACCESS_KEY_ID": os.environ["S3_ACCESS_KEY_ID"],
        "S3_SECRET_ACCESS_KEY": os.environ["S3_SECRET_ACCESS_KEY"],
        "BETTER_AUTH_SECRET": secrets.token_hex(24),
        **DEPLOYED,
        "PROJECT_ID": "deploy-test",
        "ANTHROPIC_API_KEY": "sk-ant-placeholder",
        "OPENAI_API_KEY": "sk-placeholder",
        "GEMINI_API_KEY": "placeholder",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())
