"""Fixtures shared by the whole suite. Everything talks to real services (tests/servers.py)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest_framework.test import APIClient

from tests.servers import free_port
from weldr_agent import runner
from weldr_agent.models import ApiToken

REPO = Path(__file__).resolve().parent.parent
# Host ports 3000-3019 are machine-global: one test run at a time may start previews.
PORTS_LOCK = Path("/tmp/weldr-preview-ports.lock")


def pytest_configure(config: pytest.Config) -> None:
    # The agents the tests start inherit this environment: two warm preview sandboxes each, not
    # the production twenty (tests/settings.py, same for this process). Here and not at import:
    # the benchmarks import this module and measure the defaults.
    os.environ.setdefault("PREVIEW_WARM_POOL", "2")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test may use both databases unless it asks for something else itself.
    for item in items:
        if item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db(databases="__all__"))


# `make test` runs the suite on workers (pytest-xdist): each group of tests runs whole on one
# worker, so that what its tests share is started once. xdist 3.8's own `--dist loadgroup` does
# not work under pytest 9.2 (it renames a test's nodeid through an attribute pytest no longer
# reads): its `loadscope` scheduler, with the group as the scope.
SHARED_FIXTURE = re.compile(r'@pytest\.fixture\(scope="(package|session)"')


@functools.cache
def xdist_group(module: str) -> str:
    """A test module's group (`tests/x/test_y.py`): the folder whose conftest.py shares a
    fixture across modules (package or session scope: the exec and SDK agents, Better Auth, the
    image), else the module itself (module-scoped agents, buckets and servers)."""
    folder = (REPO / module).parent
    while folder != REPO / "tests" and REPO in folder.parents:
        conftest = folder / "conftest.py"
        if conftest.is_file() and SHARED_FIXTURE.search(conftest.read_text()):
            return str(folder.relative_to(REPO))
        folder = folder.parent
    return module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    if config.getvalue("dist") != "loadscope":
        return None  # a developer's own --dist
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid.split("::")[0])

    return ByGroup(config, log)


# The longest groups first (tests/durations.json): a long group that started last would keep
# one worker busy after the others ran out of work. After pytest-django's own ordering (trylast):
# the scheduler hands out the groups in the order of their first test (--no-loadscope-reorder).
@pytest.hookimpl(specname="pytest_collection_modifyitems", trylast=True)
def pytest_collection_modifyitems__longest_first(items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from tests import durations

    known = durations.load()
    modules = {item.nodeid.split("::")[0] for item in items}
    weight: dict[str, float] = {}
    for module in modules:
        group = xdist_group(module)
        weight[group] = weight.get(group, 0) + known.get(module, durations.DEFAULT_SECONDS)

    def order(item: pytest.Item) -> tuple[float, str]:
        group = xdist_group(item.nodeid.split("::")[0])
        return -weight[group], group

    items.sort(key=order)


@pytest.fixture(scope="session", autouse=True)
def _sandbox_machinery() -> Iterator[None]:
    """Whatever happened, remove the sandboxes this test process started itself (exec sandboxes
    of workflow and files tests, warm previews), then its network namespaces, firewall chain
    and parent cgroup: tests of every package start them, not only the previews'."""
    yield
    from sandbox import warm
    from sandbox.apps import floor_shutdown
    from sandbox.bucket import bucket_sandboxes

    bucket_sandboxes.remove_all()
    warm.warm_pool.shutdown()
    floor_shutdown()


@pytest.fixture
def ports_lock() -> Iterator[None]:
    """Host ports 3000-3019 are machine-global: one test run at a time may start previews."""
    with open(PORTS_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def agent_token() -> str:
    _row, token = ApiToken.issue("tests")
    return token


@pytest.fixture
def api(agent_token: str) -> APIClient:
    """An API client authenticated with a real agent token."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


class AgentProcess:
    """`manage.py serve` in a child process with its own data directories."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.process: runner.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, timeout: float = 60) -> runner.Completed:
        return runner.run([sys.executable, REPO / "manage.py", *args], env=self.env,
                          timeout=timeout, cwd=REPO)

    def start(self, timeout: float = 60, *, prefix: tuple[str, ...] = ()) -> None:
        """Spawn `manage.py serve`; `prefix` runs it through another command (e.g. `unshare`
        into a time namespace)."""
        self.process = runner.spawn(
            [*prefix, sys.executable, REPO / "manage.py", "serve", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self.env, log_path=self.log, cwd=REPO,
        )
        from weldr_agent.s3 import port_open

        if not runner.wait_until(lambda: port_open("127.0.0.1", self.port)
                                 or self.process.poll() is not None, timeout=timeout) \
                or self.process.poll() is not None:
            raise RuntimeError(f"agent did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, grace: float = 30) -> int:
        if self.process is None:
            return 0
        code = runner.stop(self.process, grace=grace)
        self.process = None
        return code

    def remove_leftovers(self) -> None:
        """What an agent that did not shut down cleanly (a test's SIGKILL or second signal)
        leaves: its containers (warm sandboxes wait, running, for a start) and mounts under its
        runtime directory. A restarted agent would remove them; a test must not leave them."""
        runtime = Path(self.env["WELDR_RUNTIME_DIR"])
        for name in ("runc", "crun"):
            root = runtime / name
            if not root.is_dir() or shutil.which(name) is None:
                continue
            listed = runner.run([name, "--root", root, "list", "-q"], timeout=30, check=False)
            for container in listed.stdout.split():
                runner.run([name, "--root", root, "delete", "--force", container], timeout=30,
                           check=False)
        # Its workspaces (ext4 on a loop device, or binds) before the JuiceFS volumes under
        # them: a workspace unmounted in full lets its loop device go (autoclear).
        volumes = Path(self.env["WELDR_ENV_VOL"])
        for base in (Path(self.env["WORKSPACE_BASE"]), volumes, runtime):
            with open("/proc/self/mountinfo") as table:
                points = [line.split()[4] for line in table]
            for point in sorted((p for p in points if p.startswith(f"{base}/")), reverse=True):
                if runner.run(["umount", point], timeout=60, check=False).returncode != 0:
                    runner.run(["umount", "-l", point], timeout=30, check=False)
        # Its mounts' daemons (JuiceFS ends with its volume's unmount, Litestream does not):
        # by their command line, which names the agent's own data directory.
        leftover = processes_mentioning(f"{volumes}/")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in leftover:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if runner.wait_until(lambda: not any(map(runner.pid_alive, leftover)), timeout=10):
                break
        # Its network namespaces (a veth pair goes with its namespace).
        listed = runner.run(["ip", "netns", "list"], timeout=30, check=False).stdout
        for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
            if name.startswith(f"weldr-{self.instance}-"):
                runner.run(["ip", "netns", "del", name], timeout=30, check=False)
        # Its firewall: the rules that send its veths' packets to its chains, then the chains.
        for binary in ("iptables", "ip6tables"):
            listed = runner.run([binary, "-w", "10", "-S"], timeout=30, check=False).stdout
            for line in listed.splitlines():
                if line.startswith("-A ") and f" w{self.instance}+ " in f"{line} ":
                    runner.run([binary, "-w", "10", "-D", *line.split()[1:]], timeout=30,
                               check=False)
            chains = [line.split()[1] for line in listed.splitlines()
                      if line.startswith(f"-N WELDR-{self.instance}")]
            for flag in ("-F", "-X"):
                for chain in chains:
                    runner.run([binary, "-w", "10", flag, chain], timeout=30, check=False)
        # Its parent cgroup in each hierarchy, empty once its containers are deleted, and its
        # mounts' memory cgroups, empty once their JuiceFS is gone.
        from mounts.steps import MEMORY_HIERARCHY
        from sandbox.container import cgroup_parent_remove

        cgroup_parent_remove(self.instance)
        for group in MEMORY_HIERARCHY.glob(f"weldr-{self.instance}-mount-*"):
            with contextlib.suppress(OSError):
                group.rmdir()

    @property
    def instance(self) -> str:
        """The agent's settings.INSTANCE_ID."""
        return self.env.get("WELDR_INSTANCE_ID") or hashlib.sha256(
            self.env["WELDR_ENV_VOL"].encode()).hexdigest()[:6]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (our unique temp paths or bucket names)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and runner.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def agent_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a real agent whose state, workspaces and runtime live under `root`, with
    an instance id of its own (machine-global names never collide); `extra` settings win."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
        "WELDR_ENV_VOL": str(root / "env"),
        "WORKSPACE_BASE": str(root / "workspace"),
        "WELDR_RUNTIME_DIR": str(root / "run"),
        "WELDR_INSTANCE_ID": secrets.token_hex(3),
        **extra,
    })
    return env


def running_agent(root: Path, **extra: str) -> Iterator[AgentProcess]:
    """Start a real agent (`agent_env(root, **extra)`) and stop it, and whatever it left, after.
    For module-scoped fixtures: `yield from running_agent(tmp_path_factory.mktemp("x"))`."""
    process = AgentProcess(agent_env(root, **extra), free_port(), root / "agent.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        process.remove_leftovers()


def agent_client(agent: AgentProcess, *, timeout: float = 180) -> Iterator[httpx.Client]:
    """An HTTP client of `agent` holding a fresh agent token."""
    token = agent.manage("create_api_token", "--name", "tests").stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=timeout) as client:
        yield client


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[AgentProcess]:
    """A real agent process (daphne) on a free port, with state and workspace in tmp_path.

    It shares the test run's PostgreSQL server, Redis and S3 server; its shared database is a
    fresh SQLite file unless a test sets DATABASE_URL in `agent.env` before `start()`.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
        "WELDR_ENV_VOL": str(tmp_path / "env"),
        "WORKSPACE_BASE": str(tmp_path / "workspace"),
        "WELDR_RUNTIME_DIR": str(tmp_path / "run"),
    })
    agent = AgentProcess(env, free_port(), tmp_path / "agent.log")
    try:
        yield agent
    finally:
        agent.stop()
        agent.remove_leftovers()
