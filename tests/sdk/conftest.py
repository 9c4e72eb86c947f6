"""Fixtures of the SDK, CLI and MCP tests: one real agent and one really mounted bucket for the
whole directory (package scope: starting them is most of these tests' time)."""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, AgentProcess, running_agent

try:
    import weldr_sdk  # noqa: F401
except ImportError:
    # The SDK is installed into .venv by scripts/setup.sh; a worktree's tests use its own copy.
    sys.path.insert(0, str(REPO / "sdk"))

from weldr_sdk import Client  # noqa: E402

SCRIPTED = "scripted=tests.workflows.scripted.ScriptedProvider"


@pytest.fixture(scope="package")
def scripts() -> Iterator[Path]:
    """Where the scripted model's turns live (tests/workflows/scripted.py)."""
    with tempfile.TemporaryDirectory(prefix="sdk-scripts-") as directory:
        Path(directory).chmod(0o755)
        yield Path(directory)


def write_script(scripts: Path, name: str, turns: list[dict]) -> str:
    (scripts / f"{name}.json").write_text(json.dumps({"turns": turns}))
    return f"scripted/{name}"


@pytest.fixture(scope="package")
def agent(tmp_path_factory: pytest.TempPathFactory, scripts: Path) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("sdk-agent"), SSE_KEEPALIVE_SECONDS="1",
                             WORKFLOW_EXTRA_PROVIDERS=SCRIPTED, WELDR_SCRIPTED_DIR=str(scripts))


@pytest.fixture(scope="package")
def token(agent: AgentProcess) -> str:
    return agent.manage("create_api_token", "--name", "sdk-tests").stdout.strip().splitlines()[-1]


@pytest.fixture(scope="package")
def weldr(agent: AgentProcess, token: str) -> Iterator[Client]:
    with Client(agent.url, token=token, timeout=120) as client:
        yield client


@pytest.fixture(scope="package")
def bucket(weldr: Client) -> Iterator[str]:
    """A really mounted bucket (JuiceFS over the test S3 server), mounted through the SDK."""
    name = f"sdk-{secrets.token_hex(3)}"
    mount = weldr.mounts.mount(name)
    assert mount["status"] == "mounted", mount
    try:
        yield name
    finally:
        weldr.mounts.unmount(name, force=True)


@pytest.fixture(scope="package")
def weldr_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `weldr` entry point as pip installs it: `pip install --no-deps ./sdk` into a fresh
    virtualenv that sees this one's packages (httpx, click, rich, mcp) through a .pth file."""
    import site

    from weldr_agent import runner

    venv = tmp_path_factory.mktemp("weldr-venv")
    runner.run([sys.executable, "-m", "venv", venv], timeout=120)
    packages = next(venv.glob("lib/python3*/site-packages"))
    (packages / "suite.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    runner.run([venv / "bin" / "pip", "install", "-q", "--no-deps", REPO / "sdk"], timeout=300)
    return venv / "bin" / "weldr"
