"""Mount and unmount through the HTTP API, on real FUSE mounts over the test S3 server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from mounts import guards, services, steps, system
from mounts.models import Mount
from tests.mounts.conftest import machine_clean
from weldr_agent import runner
from weldr_agent.errors import ConflictError


def test_mount_then_unmount_through_the_api(api, bucket):
    # when
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["bucket"] == bucket
    assert body["path"] == str(settings.WORKSPACE_BASE / bucket)
    assert body["status"] == "mounted" and body["restored"] is False
    assert body["cache_size_mb"] > 0 and body["buffer_size_mb"] > 0 and body["mounted_at"]
    workspace = Path(body["path"])
    assert steps.is_mounted(workspace)
    (workspace / "hello.txt").write_text("hi")

    again = api.post("/mounts", {"bucket": bucket}, format="json")
    assert again.status_code == 200 and again.json()["bucket"] == bucket
    assert [m["bucket"] for m in api.get("/mounts").json()["mounts"]] == [bucket]
    assert api.get(f"/mounts/{bucket}").json()["path"] == str(workspace)
    assert services.workspace_path(bucket) == workspace

    # when
    gone = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    # then
    assert gone.status_code == 200, gone.json()
    assert gone.json() == {"bucket": bucket, "status": "unmounted"}
    assert machine_clean(bucket)
    assert api.get(f"/mounts/{bucket}").status_code == 404
    assert api.get(f"/mounts/{bucket}").json()["code"] == "not_mounted"
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 404
    with pytest.raises(ConflictError) as raised:
        services.workspace_path(bucket)
    assert raised.value.status_code == 409 and raised.value.default_code == "not_mounted"


def test_juicefs_gets_the_configured_oom_score_adj(api, bucket, settings):
    # JuiceFS sets -1000 itself where it may (storage hazard 7, docs/mounts.md; this machine's root
    # lacks
    # CAP_SYS_RESOURCE, so it stays at 0 here and only values >= 0 can be set)
    settings.JUICEFS_OOM_SCORE_ADJ = 100
    api.post("/mounts", {"bucket": bucket}, format="json")
    juicefs = steps.daemons(system.paths(bucket), system.JUICEFS)
    assert len(juicefs) == 2  # the watchdog and the server it supervises
    for pid in juicefs:
        assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "100"
    # a server that changed it again (restarted by its watchdog) is corrected by reconcile
    Path(f"/proc/{juicefs[-1]}/oom_score_adj").write_text("300")
    assert services.mount_reconcile()[bucket] == "ok"
    assert Path(f"/proc/{juicefs[-1]}/oom_score_adj").read_text().strip() == "100"


def _memory_group_of(pid: int) -> str:
    """The pid's cgroup in cgroup v1's memory hierarchy ('' when there is none)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return ""


@pytest.mark.skipif(not steps.MEMORY_HIERARCHY.is_dir(), reason="no cgroup v1 memory hierarchy")
def test_juicefs_runs_in_its_mounts_memory_cgroup_which_the_unmount_removes(api, bucket,
                                                                           settings):
    # given a limit
    settings.JUICEFS_MEMORY_CGROUP_MB = 300
    # when the bucket is mounted
    assert api.post("/mounts", {"bucket": bucket}, format="json").status_code == 201
    # then its watchdog and server (and only they) are in the mount's group, at that limit
    p = system.paths(bucket)
    group = steps.memory_group(p)
    juicefs = steps.daemons(p, system.JUICEFS)
    assert len(juicefs) == 2
    assert {_memory_group_of(pid) for pid in juicefs} == {f"/{group.name}"}
    assert sorted(map(int, (group / "cgroup.procs").read_text().split())) == juicefs
    assert int((group / "memory.limit_in_bytes").read_text()) == 300 * 1024 * 1024
    # and what it writes is charged there: the staging blocks' page cache
    charged = int((group / "memory.usage_in_bytes").read_text())
    workspace = Path(settings.WORKSPACE_BASE / bucket)
    (workspace / "blob.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    runner.run(["sync", "-f", str(workspace)], timeout=60)
    assert int((group / "memory.usage_in_bytes").read_text()) >= charged + 16 * 1024 * 1024

    # when it is unmounted
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 200
    # then the group is gone with it
    assert not group.exists()
    assert machine_clean(bucket)


def test_juicefs_without_a_memory_cgroup_mounts_unconfined_and_says_so_once(
        api, buckets, settings, caplog, monkeypatch, tmp_path):
    # given a machine without cgroup v1's memory hierarchy (cgroup v2 only)
    monkeypatch.setattr(steps.processes, "MEMORY_HIERARCHY", tmp_path / "no-such-hierarchy")
    monkeypatch.setattr(steps.processes, "_unconfined_said", False)
    # when two buckets are mounted
    with caplog.at_level("WARNING", logger="weldr.mounts"):
        for bucket in (buckets(), buckets()):
            assert api.post("/mounts", {"bucket": bucket}, format="json").status_code == 201
            # then each mounts, its JuiceFS in the agent's own memory cgroup
            for pid in steps.daemons(system.paths(bucket), system.JUICEFS):
                assert _memory_group_of(pid) == _memory_group_of(os.getpid())
    # and one warning says why, not one per mount
    said = [r.getMessage() for r in caplog.records if "memory cgroup" in r.getMessage()]
    assert len(said) == 1 and "no cgroup v1 memory hierarchy" in said[0], said


def _has_cap_sys_resource() -> bool:
    effective = next(line for line in Path("/proc/self/status").read_text().splitlines()
                     if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE is 24


def test_a_lower_oom_score_adj_needs_cap_sys_resource_and_says_so_once(api, bucket, settings,
                                                                       caplog, monkeypatch):
    # given a score below JuiceFS's inherited 0, which only CAP_SYS_RESOURCE may set
    settings.JUICEFS_OOM_SCORE_ADJ = -500
    monkeypatch.setattr(steps.processes, "_oom_kept_said", False)

    # when a bucket is mounted and reconciled
    with caplog.at_level("WARNING", logger="weldr.mounts"):
        api.post("/mounts", {"bucket": bucket}, format="json")
        assert services.mount_reconcile()[bucket] == "ok"

    # then, with the capability, the score is set; without it (this machine's root), it is
    # kept, and one warning in words names the missing capability (not two per mount)
    juicefs = steps.daemons(system.paths(bucket), system.JUICEFS)
    scores = {Path(f"/proc/{pid}/oom_score_adj").read_text().strip() for pid in juicefs}
    said = [r.getMessage() for r in caplog.records if "oom_score_adj" in r.getMessage()]
    if _has_cap_sys_resource():
        assert scores == {"-500"} and said == []
    else:
        assert scores == {"0"}
        assert len(said) == 1 and "CAP_SYS_RESOURCE" in said[0], said


def test_the_sandbox_user_can_write_in_a_new_workspace(api, bucket):
    workspace = Path(api.post("/mounts", {"bucket": bucket}, format="json").json()["path"])
    assert workspace.stat().st_uid == settings.SANDBOX_UID
    uid = str(settings.SANDBOX_UID)
    runner.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sh", "-c",
                "mkdir -p node_modules/x && echo ok > node_modules/x/index.js"],
               cwd=workspace, timeout=30)
    written = workspace / "node_modules" / "x" / "index.js"
    assert written.read_text() == "ok\n"
    assert written.stat().st_uid == settings.SANDBOX_UID


def test_unmount_guards_refuse_unless_forced(api, bucket):
    calls = []

    class PreviewRunning(ConflictError):
        default_code = "preview_running"

    def guard(name: str, force: bool) -> None:
        calls.append((name, force))
        if not force:
            raise PreviewRunning("A preview runs on this bucket; stop it or use force.")

    api.post("/mounts", {"bucket": bucket}, format="json")
    guards.register_unmount_guard(guard)
    try:
        refused = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
        assert refused.status_code == 409 and refused.json()["code"] == "preview_running"
        assert steps.answers(system.paths(bucket).mount_point)
        forced = api.post("/mounts/unmount", {"bucket": bucket, "force": True}, format="json")
        assert forced.status_code == 200
    finally:
        guards.registered.remove(guard)
    assert calls == [(bucket, False), (bucket, True)]
    assert machine_clean(bucket)


def test_mount_ensure_and_sync_endpoint(api, bucket):
    mount = services.mount_ensure(bucket=bucket)
    assert services.mount_ensure(bucket=bucket).pk == mount.pk
    (Path(mount.path) / "a.txt").write_bytes(b"x" * 100_000)
    response = api.post(f"/mounts/{bucket}/sync")
    assert response.status_code == 200, response.json()
    assert response.json()["synced_at"]
    # the block is in S3 now, not only in the local staging folder
    from weldr_agent import s3

    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{system.VOLUME_NAME}/chunks/")
    assert listed.get("KeyCount", 0) >= 1


def test_mount_files_live_where_the_design_says(api, bucket):
    api.post("/mounts", {"bucket": bucket}, format="json")
    vol = settings.WELDR_ENV_VOL
    for path in (vol / "meta" / f"{bucket}.db", vol / "cache" / bucket,
                 vol / f"juicefs-{bucket}.log", vol / f"litestream-{bucket}.yml",
                 vol / f"litestream-{bucket}.log"):
        assert path.exists(), path
    mount = Mount.objects.get(bucket=bucket)
    p = system.paths(bucket)
    assert steps.owns(mount.juicefs_pid, system.daemon_tag(p, system.JUICEFS))
    assert steps.owns(mount.litestream_pid, system.daemon_tag(p, system.LITESTREAM))
    # one litestream and one juicefs (a watchdog and its server) for this bucket
    assert steps.daemons(p, system.LITESTREAM) == [mount.litestream_pid]
    assert steps.daemons(p, system.JUICEFS)[0] == mount.juicefs_pid
