"""Fixtures for commands and files: a real agent process, a bucket workspace, HTTP clients."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AgentProcess, running_agent


@pytest.fixture(scope="package")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real agent (daphne) for the package's modules, with its own state, workspace and
    runtime dir; each module mounts a bucket of its own (`bucket`) and unmounts it after."""
    yield from running_agent(tmp_path_factory.mktemp("agent"), EXEC_MAX_CONCURRENT="3",
                             EXEC_OUTPUT_MAX_BYTES=str(64 * 1024),
                             FILE_UPLOAD_MAX_BYTES=str(1024 * 1024))


# Module-scoped (a module may start an agent of its own: test_limits.py).
@pytest.fixture(scope="module")
def token(agent: AgentProcess) -> str:
    name = f"exec-tests-{secrets.token_hex(3)}"  # token names are unique per agent
    return agent.manage("create_api_token", "--name", name).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def http(agent: AgentProcess, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=agent.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as client:
        yield client


def mount(http: httpx.Client, name: str) -> Path:
    """Mount a real bucket (JuiceFS over the test S3 server) through the API."""
    response = http.post("/mounts", json={"bucket": name}, timeout=180)
    assert response.status_code in (200, 201), response.text
    return Path(response.json()["path"])


def unmount(http: httpx.Client, name: str) -> None:
    response = http.post("/mounts/unmount", json={"bucket": name, "force": True}, timeout=180)
    assert response.status_code in (200, 404), response.text


@pytest.fixture(scope="module")
def bucket(http: httpx.Client) -> Iterator[str]:
    """A really mounted bucket, for the whole module."""
    name = f"exec-{secrets.token_hex(3)}"
    mount(http, name)
    try:
        yield name
    finally:
        unmount(http, name)


@pytest.fixture(scope="module")
def workspace(http: httpx.Client, bucket: str) -> Path:
    return Path(http.get(f"/mounts/{bucket}").json()["path"])
