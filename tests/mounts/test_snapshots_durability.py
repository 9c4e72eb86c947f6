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
    listed = api.get(f"/mounts/{bucket}/snapshots?sizes=1").json()["snapshots"]
    assert [item["id"] for item in listed] == ids[1:]
    assert all(isinstance(item["size_bytes"], int) for item in listed), listed
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


def test_a_run_checkpoint_brings_back_untracked_and_ignored_files(api, bucket, settings):
    from workflows.models import Branch, Event, Project, Version, WorkflowRun

    # given a workspace with a build output and node_modules, and a run on a branch of it
    mount = api.post("/mounts", {"bucket": bucket, "layout": "image"}, format="json").json()
    workspace = Path(mount["path"])
    tree = write_tree(workspace)
    project = Project.objects.create(name="p", owner_id="o")
    branch = Branch.objects.create(project=project, name="main", bucket=bucket)
    run = WorkflowRun.objects.create(branch=branch, model="m", status="running")
    version = Version.objects.create(branch=branch, number=1, commit_hash="a" * 40, run=run)
    # when the run's checkpoint is taken (what workflows/engine.py calls) and the run changes
    # tracked, untracked and ignored files
    checkpoint = snapshots.checkpoint_before_run(bucket=bucket, run_id=run.id,
                                                 branch_id=branch.id)
    assert checkpoint is not None and checkpoint.kind == "checkpoint"
    (workspace / "README.md").write_text("rewritten by the run\n")
    (workspace / "node_modules" / "left-pad").mkdir(parents=True)
    (workspace / "node_modules" / "left-pad" / "index.js").write_text("x\n")
    (workspace / "big" / "blob.bin").unlink()
    run.status = "completed"
    run.save()
    # then POST /revert in snapshot mode puts the whole workspace back
    reverted = api.post("/revert", {"project_id": project.id, "branch_id": branch.id,
                                    "version_id": version.id, "mode": "snapshot"},
                        format="json")
    assert reverted.status_code == 200, reverted.json()
    assert (reverted.json()["mode"], reverted.json()["snapshot_id"]) == (
        "snapshot", checkpoint.snapshot_id)
    assert read_tree(workspace, tree) == tree
    assert not (workspace / "node_modules").exists()
    types = list(Event.objects.filter(branch=branch).values_list("type", flat=True))
    assert types == ["snapshot.created", "snapshot.restored"]
    # and with SNAPSHOT_BEFORE_RUN off there is no checkpoint, so snapshot mode is 404
    settings.SNAPSHOT_BEFORE_RUN = False
    other = WorkflowRun.objects.create(branch=branch, model="m", status="completed")
    later = Version.objects.create(branch=branch, number=2, commit_hash="b" * 40, run=other)
    assert snapshots.checkpoint_before_run(bucket=bucket, run_id=other.id,
                                           branch_id=branch.id) is None
    missing = api.post("/revert", {"project_id": project.id, "branch_id": branch.id,
                                   "version_id": later.id, "mode": "snapshot"}, format="json")
    assert missing.status_code == 404 and missing.json()["code"] == "snapshot_not_found"


INFO = """/v/.weldr/snapshots/a.ext4 :
  inode: 5
 chunks:
+------------+---------+----------+----------+----------+
| chunkIndex | sliceId |   size   |  offset  |  length  |
+------------+---------+----------+----------+----------+
|          0 |     154 |     4096 |        0 |     4096 |
|          0 |     139 | 37920768 |     8192 |  4268032 |
|          1 |       0 | 67108864 |        0 | 67108864 |
/v/.weldr/workspace.ext4 :
  inode: 9
|          0 |     139 | 37920768 |  4280320 |    61440 |
|          0 |     160 |     8192 |        0 |     8192 |
"""


def test_sizes_count_the_slices_no_other_image_references():
    slices = system.info_slices(INFO)
    assert slices == {"/v/.weldr/snapshots/a.ext4": {154: 4096, 139: 37920768},
                      "/v/.weldr/workspace.ext4": {139: 37920768, 160: 8192}}
    assert system.exclusive_bytes(slices) == {"/v/.weldr/snapshots/a.ext4": 4096,
                                              "/v/.weldr/workspace.ext4": 8192}
