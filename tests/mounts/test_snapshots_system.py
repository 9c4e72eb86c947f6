"""The pure parts of snapshots' machine side: JuiceFS's control-file clone message and its
answer, and the superblock check that decides whether a clone needs `e2fsck -p`."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from mounts import system
from mounts.system.snapshots import CONTROL_PROGRESS
from weldr_agent import runner


def test_the_clone_message_is_what_juicefs_reads():
    # pkg/vfs/internal.go (meta.Clone = 1006): header (command, length), then source inode,
    # source parent, target parent, name (length-prefixed), umask, mode flags, workers.
    message = system.clone_message(7, 2, 3, "abc.ext4")
    command, length = struct.unpack_from(">II", message)
    assert (command, length) == (1006, len(message) - 8)
    assert struct.unpack_from(">QQQB", message, 8) == (7, 2, 3, 8)
    assert message[33:41] == b"abc.ext4"
    umask, mode, workers = struct.unpack_from(">HBB", message, 41)
    assert (umask, mode, workers) == (0o022, 0x02, 1)  # 0x02: preserve uid, gid and mode
    for bad in ("", "a/b", "x" * 256):
        with pytest.raises(ValueError):
            system.clone_message(7, 2, 3, bad)


def test_the_clone_answer_is_progress_records_then_an_errno():
    progress = bytes([CONTROL_PROGRESS]) + struct.pack(">QQ", 1, 1)
    assert system.clone_reply(b"") is None
    assert system.clone_reply(progress) is None
    assert system.clone_reply(progress + b"\x00") == 0
    assert system.clone_reply(progress * 2 + b"\x11") == 17  # EEXIST
    assert system.clone_reply(b"\x00") == 0
    assert system.clone_reply(progress + progress[:5]) is None  # a record cut by the read
    for garbage in (b"\x00\x00", b"\x01" * 20, progress + b"\x00\x00"):
        with pytest.raises(ValueError):
            system.clone_reply(garbage)


def _superblock(image: Path) -> bytes:
    with open(image, "rb") as handle:
        handle.seek(system.SUPERBLOCK_OFFSET)
        return handle.read(system.SUPERBLOCK_SIZE)


def _debugfs(image: Path, request: str) -> None:
    runner.run(["debugfs", "-w", "-R", request, str(image)], timeout=30)


@pytest.mark.parametrize("damage, clean", [
    ("", True),                               # as mkfs (or a freeze) leaves it
    ("ssv state 0", False),                   # mounted, never cleanly unmounted
    ("ssv state 3", False),                   # the kernel recorded an error
    ("feature needs_recovery", False),        # a journal to replay
])
def test_only_a_clean_superblock_skips_e2fsck(tmp_path: Path, damage: str, clean: bool):
    image = tmp_path / "image.ext4"
    image.write_bytes(b"")
    runner.run(["truncate", "-s", "64M", str(image)], timeout=30)
    runner.run(system.mkfs_ext4_argv(image, label="t"), timeout=60)
    if damage:
        _debugfs(image, damage)
    assert system.superblock_clean(_superblock(image)) is clean


def test_a_short_or_random_superblock_is_not_clean(tmp_path: Path):
    image = tmp_path / "image.ext4"
    runner.run(["truncate", "-s", "64M", str(image)], timeout=30)
    runner.run(system.mkfs_ext4_argv(image, label="t"), timeout=60)
    raw = bytearray(_superblock(image))
    assert system.superblock_clean(bytes(raw))
    raw[0x38:0x3A] = b"\x34\x12"  # not ext4's magic
    assert not system.superblock_clean(bytes(raw))
    assert not system.superblock_clean(bytes(raw[:512]))
    assert not system.superblock_clean(b"")
    assert not system.superblock_clean(b"\x53\xef" * 100)
    assert not system.superblock_clean(bytes(system.SUPERBLOCK_SIZE))


@pytest.mark.django_db
def test_the_rows_follow_the_sidecars_writing_only_what_changed():
    import dataclasses
    from datetime import UTC, datetime, timedelta

    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    from mounts import snapshots
    from mounts.models import Snapshot
    from mounts.snapshots_store import Sidecar
    from weldr_agent.databases import STATE_DB

    p = system.paths("rows-bucket")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    found = [Sidecar(id=f"{n:032x}", bucket=p.bucket, name=f"s{n}", note="", kind="manual",
                     created_at=(start + timedelta(minutes=n)).isoformat(), frozen_ms=50.5)
             for n in range(4)]
    # given the rows of three snapshots
    rows = snapshots._rows_refresh(p, found[:3], sizes=False)
    assert [row.snapshot_id for row in rows] == [item.id for item in found[:3]]
    assert rows[0].created_at == start and rows[0].frozen_ms == 50.5

    # when a fourth is taken: then one row is written, the others are left alone
    with CaptureQueriesContext(connections[STATE_DB]) as queries:
        rows = snapshots._rows_refresh(p, found, sizes=False)
    written = [q["sql"].split()[0] for q in queries.captured_queries
               if q["sql"].split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert written == ["INSERT"], queries.captured_queries
    assert [row.snapshot_id for row in rows] == [item.id for item in found]

    # when one is gone from the volume and another's sidecar says something else
    found[1] = dataclasses.replace(found[1], name="renamed")
    rows = snapshots._rows_refresh(p, [found[1], found[3]], sizes=False)
    # then the rows say what the volume says
    assert [(row.snapshot_id, row.name) for row in rows] == [(found[1].id, "renamed"),
                                                             (found[3].id, "s3")]
    assert sorted(Snapshot.objects.filter(bucket=p.bucket)
                  .values_list("snapshot_id", flat=True)) == [found[1].id, found[3].id]


def test_an_interrupted_clone_is_asked_again_a_few_times(monkeypatch, tmp_path: Path):
    from errno import EINTR

    from mounts import snapshots_store
    from mounts.snapshots_errors import SnapshotFailed

    answers: list[int] = []
    monkeypatch.setattr(snapshots_store, "_clone_once", lambda *args: answers.pop(0))
    target = tmp_path / "clone.ext4"
    # interrupted twice, then done: the clone succeeds
    answers[:] = [EINTR, EINTR, 0]
    snapshots_store.clone(tmp_path, tmp_path / "image.ext4", target)
    assert answers == []
    # interrupted every time: it fails, in words, after CLONE_ATTEMPTS
    answers[:] = [EINTR] * snapshots_store.CLONE_ATTEMPTS
    with pytest.raises(SnapshotFailed, match="Interrupted system call"):
        snapshots_store.clone(tmp_path, tmp_path / "image.ext4", target)
    assert answers == []
