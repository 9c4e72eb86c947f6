"""The remount of a known image volume (issue 17): no e2fsck where this machine's own clean
unmount is the image's last write — and e2fsck again after a crash, or after another machine
took the bucket over and wrote it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mounts import services, steps, system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean, read_tree, write_tree
from weldr_agent import runner


@pytest.fixture
def e2fsck_runs(monkeypatch) -> list[list[str]]:
    """Every e2fsck the mount code runs (the real one: runner.run is only observed)."""
    seen: list[list[str]] = []
    original = runner.run

    def run(argv, **kwargs):  # type: ignore[no-untyped-def]
        if argv and argv[0] == "e2fsck":
            seen.append(list(argv))
        return original(argv, **kwargs)

    monkeypatch.setattr(runner, "run", run)
    return seen


def _image(bucket: str) -> system.Paths:
    return system.paths(bucket, system.IMAGE)


def test_a_clean_remount_skips_e2fsck_and_a_crash_brings_it_back(bucket, e2fsck_runs):
    # given an image volume written and unmounted cleanly
    mount, _ = services.mount_create(bucket=bucket, layout="image")
    tree = write_tree(Path(mount.path), files=40)
    services.mount_remove(bucket=bucket)
    p = _image(bucket)
    assert p.image_clean.exists()
    e2fsck_runs.clear()
    # when it is mounted again on this machine
    mount, created = services.mount_create(bucket=bucket)
    # then no e2fsck ran, the files are there, and the record vouched for this mount only
    assert created and e2fsck_runs == []
    assert read_tree(Path(mount.path), tree) == tree
    assert not p.image_clean.exists()
    assert steps.image_mounted(p)
    # when everything crashes (no clean unmount) and the bucket is mounted again
    steps.teardown(p, juicefs_pid=mount.juicefs_pid, litestream_pid=mount.litestream_pid)
    Mount.objects.filter(bucket=bucket).delete()
    mount, _ = services.mount_create(bucket=bucket)
    # then e2fsck checked the image first
    assert [argv[-1] for argv in e2fsck_runs] == [str(p.image)]
    assert read_tree(Path(mount.path), tree) == tree


def test_an_image_another_machine_wrote_is_checked_again(bucket, settings, tmp_path,
                                                          e2fsck_runs):
    # given machine A unmounted the image cleanly (its record of that is on its volume)
    a = {"WELDR_ENV_VOL": settings.WELDR_ENV_VOL, "WORKSPACE_BASE": settings.WORKSPACE_BASE}
    mount, _ = services.mount_create(bucket=bucket, layout="image")
    first = write_tree(Path(mount.path), files=20)
    services.mount_remove(bucket=bucket)
    assert _image(bucket).image_clean.exists()
    # and machine B (another volume, so another machine id) took the bucket and wrote it
    settings.WELDR_ENV_VOL, settings.WORKSPACE_BASE = tmp_path / "env-b", tmp_path / "ws-b"
    settings.WELDR_ENV_VOL.mkdir()
    mount, _ = services.mount_create(bucket=bucket)
    assert mount.restored
    (Path(mount.path) / "from-b.txt").write_bytes(b"written by machine B\n")
    services.mount_remove(bucket=bucket)
    assert machine_clean(bucket)
    # when A mounts it again
    settings.WELDR_ENV_VOL, settings.WORKSPACE_BASE = a["WELDR_ENV_VOL"], a["WORKSPACE_BASE"]
    e2fsck_runs.clear()
    mount, _ = services.mount_create(bucket=bucket)
    # then A's record of its own unmount vouched for nothing: the metadata came from the
    # replica (B wrote since) and the image was checked before it was mounted
    assert mount.restored
    assert [argv[-1] for argv in e2fsck_runs] == [str(_image(bucket).image)]
    assert (Path(mount.path) / "from-b.txt").read_bytes() == b"written by machine B\n"
    assert read_tree(Path(mount.path), first) == first
    assert not _image(bucket).image_clean.exists()


def test_without_the_watchdog_one_juicefs_process_serves_the_mount(bucket, settings):
    # given JUICEFS_WATCHDOG off (docs/performance.md, "Mounts: memory")
    settings.JUICEFS_WATCHDOG = False
    # when an image volume is mounted, written, unmounted and mounted again
    mount, _ = services.mount_create(bucket=bucket, layout="image")
    p = _image(bucket)
    # then JuiceFS is one process (no watchdog above the server), and the workspace works
    assert len(steps.daemons(p, system.JUICEFS)) == 1
    tree = write_tree(Path(mount.path), files=20)
    services.mount_remove(bucket=bucket)
    assert machine_clean(bucket)
    mount, _ = services.mount_create(bucket=bucket)
    assert read_tree(Path(mount.path), tree) == tree
    assert len(steps.daemons(p, system.JUICEFS)) == 1
