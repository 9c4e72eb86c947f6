"""Snapshots live in the volume, so in S3: after machine loss a new machine lists and restores
them, with their retention policy. Retention deletes what it should and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from mounts import snapshots, system
from mounts.snapshots_store import Sidecar
from tests.mounts.conftest import read_tree, write_tree
from tests.mounts.test_durability import lose_the_machine


def _sidecar(snapshot_id: str, days_ago: float) -> Sidecar:
    created = datetime(2026, 6, 1, tzinfo=UTC) - timedelta(days=days_ago)
    return Sidecar(id=snapshot_id, bucket="b", name="", note="", kind="manual",
                   created_at=created.isoformat())


def test_retention_picks_the_oldest_beyond_keep_or_age_and_spares_the_newest():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    items = [_sidecar("a", 40), _sidecar("b", 20), _sidecar("c", 10), _sidecar("d", 1)]
    assert snapshots.retention_victims(items, snapshots.Policy(2, 0), now) == ["a", "b"]
    assert snapshots.retention_victims(items, snapshots.Policy(0, 15), now) == ["a", "b"]
    assert snapshots.retention_victims(items, snapshots.Policy(3, 30), now) == ["a"]
    assert snapshots.retention_victims(items, snapshots.Policy(0, 0), now) == []
    # the newest stays even when everything is too old
    assert snapshots.retention_victims(items, snapshots.Policy(0, 1), now) == ["a", "b", "c"]


def test_snapshots_and_their_policy_survive_machine_loss(api, bucket):
    # given an image workspace with three snapshots, a policy keeping two, and a zero-RPO sync
    mount = api.post("/mounts", {"bucket": bucket, "layout": "image"}, format="json").json()
    workspace = Path(mount["path"])
    tree = write_tree(workspace)
    policy = api.put(f"/mounts/{bucket}/snapshots/policy", {"keep": 2, "max_age_days": 0},
                     format="json")
    assert policy.status_code == 200, policy.json()
    ids = []
    for index in range(3):
        (workspace / "step.txt").write_text(str(index))
        made = api.post(f"/mounts/{bucket}/snapshots", {"name": f"s{index}", "durable": True},
                        format="json")
        assert made.status_code == 201, made.json()
        ids.append(made.json()["id"])
    # then retention deleted the oldest, and only it (its image and sidecar gone)
    listed = api.get(f"/mounts/{bucket}/snapshots").json()["snapshots"]
    assert [item["id"] for item in listed] == ids[1:]
    area = system.snapshot_dir(system.paths(bucket, system.IMAGE))
    assert sorted(path.name for path in area.iterdir()) == sorted(
        [f"{i}.{ext}" for i in ids[1:] for ext in ("ext4", "json")] + ["policy.json"])
    # when the workspace changes, then the machine is lost and a new one mounts the bucket
    (workspace / "README.md").write_text("changed after the snapshot\n")
    lose_the_machine(bucket, system.IMAGE)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    assert again.status_code == 201, again.json()
    assert again.json()["restored"] is True
    # then it lists the same snapshots and the same policy, and restores one byte for byte
    listed = api.get(f"/mounts/{bucket}/snapshots").json()["snapshots"]
    assert [(item["id"], item["name"]) for item in listed] == [(ids[1], "s1"), (ids[2], "s2")]
    assert api.get(f"/mounts/{bucket}/snapshots/policy").json() == {"keep": 2,
                                                                    "max_age_days": 0}
    restored = api.post(f"/mounts/{bucket}/snapshots/{ids[1]}/restore")
    assert restored.status_code == 200, restored.json()
    assert read_tree(workspace, tree) == tree
    assert (workspace / "step.txt").read_text() == "1"
