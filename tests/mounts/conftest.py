"""Fixtures for real mounts: per-test directories, short upload delays, exact cleanup.

Tests shorten the durability windows through settings (UPLOAD_DELAY=2s,
LITESTREAM_SYNC_INTERVAL=1s, RESTORE_MARGIN_SECONDS=2) so that a machine-loss test does not
wait five minutes; the production defaults are checked in test_system.py.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from mounts import lease, services, steps, system
from mounts.models import Mount


@pytest.fixture(autouse=True)
def mount_dirs(settings, tmp_path: Path) -> Iterator[None]:
    # The Litestream control socket path must stay under 108 bytes: a short runtime dir.
    runtime = Path(tempfile.mkdtemp(prefix="wm-"))
    settings.WELDR_ENV_VOL = tmp_path / "env"
    settings.WORKSPACE_BASE = tmp_path / "ws"
    settings.RUNTIME_DIR = runtime
    settings.UPLOAD_DELAY = "2s"
    settings.LITESTREAM_SYNC_INTERVAL = "1s"
    settings.RESTORE_MARGIN_SECONDS = 2
    # A lost machine's lease expires in seconds, not a minute (test_durability waits for it).
    settings.MOUNT_LEASE_TTL_SECONDS = 3
    settings.MOUNT_LEASE_RENEW_SECONDS = 1.0
    settings.MOUNT_LEASE_SETTLE_SECONDS = 0.3
    # These tests are about JuiceFS itself (its mount answering, staging, faults): the `files`
    # layout, where the workspace is the JuiceFS mount. The image layout's tests ask for it.
    settings.WORKSPACE_LAYOUT = "files"
    settings.WELDR_ENV_VOL.mkdir(parents=True)
    try:
        yield
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def bucket_name() -> str:
    return f"t{django_settings.INSTANCE_ID}-{secrets.token_hex(4)}"


def machine_clean(bucket: str) -> bool:
    """Nothing of this bucket is left on the machine: no mount, no daemon, no loop device."""
    return not steps.leftovers(system.paths(bucket))


@pytest.fixture
def bucket(buckets: Callable[[], str]) -> str:
    return buckets()


@pytest.fixture
def buckets() -> Iterator[Callable[[], str]]:
    """A factory of fresh bucket names; teardown unmounts exactly those, whatever happened."""
    made: list[str] = []

    def make() -> str:
        made.append(bucket_name())
        return made[-1]

    try:
        yield make
    finally:
        for name in made:
            try:
                if Mount.objects.filter(bucket=name).exists():
                    services.mount_remove(bucket=name, force=True)
            except Exception:
                pass
            # Whatever the unmount did, stop this bucket's daemons (found by exact argv).
            steps.teardown(system.paths(name), juicefs_pid=None, litestream_pid=None, grace=5)
            Mount.objects.filter(bucket=name).delete()
            # And this process's record of its lease (a machine-loss test drops the row, not
            # the record): a later test in this process renews every lease it still holds.
            lease.forget(name)


def write_tree(root: Path, files: int = 120) -> dict[str, bytes]:
    """A small source tree: nested folders, text and binary files of varied sizes."""
    tree: dict[str, bytes] = {}
    for index in range(files):
        relative = f"src/pkg{index % 7}/mod{index % 3}/file{index}.py"
        body = (f"# module {index}\n" * (index % 50 + 1)).encode() + secrets.token_bytes(index * 37)
        tree[relative] = body
    tree["big/blob.bin"] = secrets.token_bytes(6 * 1024 * 1024 + 123)  # spans two 4 MiB blocks
    tree["README.md"] = b"hello\n"
    for relative, body in tree.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return tree


def read_tree(root: Path, tree: dict[str, bytes]) -> dict[str, bytes]:
    return {relative: (root / relative).read_bytes() for relative in tree}
