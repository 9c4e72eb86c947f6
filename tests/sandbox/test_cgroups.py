"""An instance's parent cgroup is removed at shutdown even while the runtime is still removing
its containers' groups (sandbox/container.py, `cgroup_parent_remove`): real cgroups."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest

from sandbox import oci
from sandbox.container import CGROUP_ROOT, cgroup_parent_remove

HIERARCHIES = [CGROUP_ROOT / name for name in ("memory", "pids")]


@pytest.fixture
def parent_groups():
    """A parent group per hierarchy for a test instance, each with a container's child group
    in it, as `runc run` leaves them for a moment after its container is deleted."""
    instance = "t" + secrets.token_hex(3)
    parents = [hierarchy / oci.cgroup_parent(instance) for hierarchy in HIERARCHIES]
    for parent in parents:
        (parent / "container").mkdir(parents=True)
    yield instance, parents
    for parent in parents:
        for group in (parent / "container", parent):
            if group.exists():
                group.rmdir()


def test_the_parent_group_goes_once_the_runtime_has_removed_its_children(
        parent_groups: tuple[str, list[Path]]) -> None:
    instance, parents = parent_groups
    # The runtime removes the children a moment after the shutdown began.
    later = threading.Timer(0.3, lambda: [(p / "container").rmdir() for p in parents])
    later.start()
    started = time.monotonic()
    try:
        cgroup_parent_remove(instance)
    finally:
        later.join()
    assert not any(parent.exists() for parent in parents)
    assert 0.25 < time.monotonic() - started < 3


def test_a_parent_group_still_holding_a_container_stays_after_the_wait(
        parent_groups: tuple[str, list[Path]], caplog: pytest.LogCaptureFixture) -> None:
    instance, parents = parent_groups
    started = time.monotonic()
    cgroup_parent_remove(instance, timeout=0.3)
    assert all((parent / "container").is_dir() for parent in parents)
    assert time.monotonic() - started < 2
    assert "kept: Device or resource busy" in caplog.text
