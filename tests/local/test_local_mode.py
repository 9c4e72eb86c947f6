"""Local mode in the service: POST /mounts restores and pins a branch directory, unmount and
mount_sync back it up, cleanup-lru.sh never removes a mounted one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mounts import local
from mounts.services import mount_remove, mount_sync, workspace_path
from tests.local.conftest import machine_env, s3_keys, s3_text
from weldr_agent import runner


@pytest.fixture
def local_mode(settings, tmp_path: Path) -> Iterator[Path]:
    settings.WORKSPACE_MODE = "local"
    settings.BRANCHES_DIR = tmp_path / "branches"
    settings.BRANCH_MIN_FREE_MB = 0
    yield settings.BRANCHES_DIR
    for bucket in local.pinned():
        local._unpin(bucket)


def test_mount_restores_a_branch_directory_and_unmount_backs_it_up(api, local_mode: Path,
                                                                   bucket: str):
    # when
    response = api.post("/mounts", {"bucket": bucket}, format="json")
    # then the workspace is the branch directory, pinned
    assert response.status_code == 201, response.json()
    path = Path(response.json()["path"])
    assert path == local_mode / "local" / bucket and path.is_dir()
    assert workspace_path(bucket) == path
    assert bucket in local.pinned()
    # when the workspace is used and unmounted
    (path / "src").mkdir()
    (path / "src" / "main.py").write_text("print('hello')\n")
    assert api.post("/mounts/unmount", {"bucket": bucket}, format="json").status_code == 200
    # then S3 holds it and the pin is gone
    assert f"branches/{bucket}/tree/src/main.py" in s3_keys(bucket)
    assert "files=1" in s3_text(bucket, f"branches/{bucket}/COMPLETE")
    assert bucket not in local.pinned()
    # when the machine loses its disk and the bucket is mounted again
    runner.run(["rm", "-rf", str(local_mode)], timeout=60)
    again = api.post("/mounts", {"bucket": bucket}, format="json")
    assert again.status_code == 201 and again.json()["restored"] is True
    assert (path / "src" / "main.py").read_text() == "print('hello')\n"
    mount_remove(bucket=bucket)


def test_mount_sync_backs_up_each_version_and_deletes_propagate(api, local_mode: Path,
                                                               bucket: str):
    api.post("/mounts", {"bucket": bucket}, format="json")
    path = workspace_path(bucket)
    (path / "a.txt").write_text("v1")
    (path / "b.txt").write_text("b")
    mount_sync(bucket=bucket)
    assert {f"branches/{bucket}/tree/a.txt", f"branches/{bucket}/tree/b.txt"} <= s3_keys(bucket)
    # an unchanged directory is not synced again
    assert local.workspace_sync(bucket) is False
    (path / "b.txt").unlink()
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    assert f"branches/{bucket}/tree/b.txt" not in s3_keys(bucket)
    mount_remove(bucket=bucket)


def test_lru_never_removes_a_mounted_branch_directory(api, local_mode: Path, bucket: str,
                                                      tmp_path: Path):
    api.post("/mounts", {"bucket": bucket}, format="json")
    path = workspace_path(bucket)
    (path / "work.txt").write_text("in progress")
    (tmp_path / "env").mkdir()
    env = {**machine_env(tmp_path / "env"), "WELDR_BRANCHES_DIR": str(local_mode)}
    # when space is wanted that cannot be had
    result = runner.run([local.SCRIPTS / "cleanup-lru.sh", "--min-free-mb", "100000000"],
                        env=env, timeout=120, check=False)
    # then the mounted directory is still there (its changes were backed up, it was skipped)
    assert result.returncode == 1
    assert (path / "work.txt").read_text() == "in progress"
    assert "in use" in (tmp_path / "env" / "branches.log").read_text()
    mount_remove(bucket=bucket)
    # once unmounted it may go
    runner.run([local.SCRIPTS / "cleanup-lru.sh", "--min-free-mb", "100000000"], env=env,
               timeout=120, check=False)
    assert not path.exists()


def test_workspace_path_of_an_unmounted_bucket_is_409(local_mode: Path, bucket: str):
    from mounts.errors import NotMounted

    with pytest.raises(NotMounted):
        workspace_path(bucket)


def test_builders_pass_explicit_keys_and_nothing_else(settings):
    env = local.script_env()
    assert env["S3_ACCESS_KEY_ID"] == settings.S3_ACCESS_KEY_ID
    assert not any(name.startswith("AWS_") or name in {"DATABASE_URL", "REDIS_URL"}
                   for name in env)
    argv = local.script_argv("sync-to-s3.sh", "my-bucket")
    assert argv[1:] == ["--bucket", "my-bucket", "my-bucket", "local"]
