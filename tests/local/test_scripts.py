"""The branch-directory scripts, run for real against the test run's S3 server."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import pytest

from tests.local.conftest import SCRIPTS, Machine, s3_keys, s3_text, tree
from weldr_agent import runner

SCRIPT_NAMES = ["create-branch-dir.sh", "sync-from-s3.sh", "sync-to-s3.sh", "cleanup-lru.sh",
                "weldr-user-env.sh"]
BAD_NAMES = ["a b", "x;touch /tmp/weldr-pwned", "$(id)", "../etc", "..", "", "-rf", "a/b",
             "é", "a\nb", "`id`", "a*"]


def write(root: Path, rel: str, content: str | bytes, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)


def create(machine: Machine, bucket: str, branch: str = "b1", *options: str) -> Path:
    result = machine.run("create-branch-dir.sh", *options, "--bucket", bucket, branch, "p1")
    return Path(result.stdout.strip())


@pytest.mark.parametrize("script", SCRIPT_NAMES)
def test_every_script_has_help(machine: Machine, script: str):
    result = machine.run(script, "--help")
    assert result.stdout.startswith("Usage:"), result.stdout
    assert result.returncode == 0


@pytest.mark.parametrize("script", ["create-branch-dir.sh", "sync-from-s3.sh", "sync-to-s3.sh"])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_rejected_before_any_use(machine: Machine, script: str, bad: str):
    for args in ((bad, "project1"), ("branch1", bad)):
        # when
        result = machine.run(script, *args, check=False)
        # then: exit 2, one error line, and nothing was created anywhere
        assert result.returncode == 2, (args, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], result.stderr
        assert not machine.branches.exists()
    assert not Path("/tmp/weldr-pwned").exists()


def test_bad_bucket_and_missing_arguments_are_rejected(machine: Machine):
    for args in (("--bucket", "Bad_Bucket", "b1", "p1"), ("--bucket", "a..b", "b1", "p1"),
                 ("b1",), ("b1", "p1", "extra"), ("--nope", "b1", "p1")):
        result = machine.run("create-branch-dir.sh", *args, check=False)
        assert result.returncode == 2, (args, result)
        assert result.stderr.count("\n") == 1
    assert machine.run("cleanup-lru.sh", "--keep", "a b/c", check=False).returncode == 2
    assert not machine.branches.exists()


def test_create_reuses_an_existing_directory(machine: Machine, bucket: str):
    path = machine.run("create-branch-dir.sh", "--bucket", bucket, "b1", "p1").stdout.strip()
    assert path == str(machine.branches / "p1" / "b1")
    write(Path(path), "keep.txt", "mine")
    again = machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket, "b1", "p1")
    assert again.stdout.strip() == path
    assert (Path(path) / "keep.txt").read_text() == "mine"
    assert "reusing" in (machine.root / "branches.log").read_text()


def test_backup_and_restore_on_a_wiped_machine(machine: Machine, bucket: str):
    # given a branch directory with nested files, odd names, a symlink and an executable
    branch = create(machine, bucket)
    write(branch, "src/app.js", "console.log('hi')\n")
    write(branch, "dir with spaces/file #1 (copy).txt", "spaces")
    write(branch, "bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(branch, "data/blob.bin", os.urandom(300_000))
    (branch / "link-to-app").symlink_to("src/app.js")
    before = tree(branch)
    # when
    out = machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1").stdout
    # then S3 holds the tree and a COMPLETE record naming generation 1
    assert "generation=1" in out
    complete = s3_text(bucket, "branches/b1/COMPLETE")
    assert "generation=1" in complete and "files=5" in complete
    assert "branches/b1/tree/src/app.js" in s3_keys(bucket)
    # when the machine is wiped and the branch is created again
    machine.wipe()
    restored = machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket, "b1", "p1")
    # then
    assert tree(Path(restored.stdout.strip())) == before
    assert not (machine.state("b1") / "restoring").exists()


def test_deletes_propagate_to_s3(machine: Machine, bucket: str):
    branch = create(machine, bucket)
    write(branch, "a.txt", "a")
    write(branch, "gone/b.txt", "b")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    # when
    (branch / "gone" / "b.txt").unlink()
    write(branch, "a.txt", "a2")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    # then: only what exists locally is in S3, and no backups or old manifests are left
    keys = s3_keys(bucket, "branches/b1/")
    assert keys == {"branches/b1/tree/a.txt", "branches/b1/manifest-2.md5", "branches/b1/COMPLETE"}
    machine.wipe()
    restored = Path(machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket,
                                "b1", "p1").stdout.strip())
    assert tree(restored) == {"a.txt": ("file", f"{b'a2'.hex()}:2:0o644")}


def test_restore_with_nothing_in_s3_leaves_an_empty_directory(machine: Machine, bucket: str):
    result = machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket, "new", "p1")
    assert tree(Path(result.stdout.strip())) == {}


def test_sync_fails_cleanly_when_s3_is_unreachable(machine: Machine, bucket: str):
    branch = create(machine, bucket)
    write(branch, "a.txt", "a")
    # (the scripts' rclone retries, 3 x 3 by default, only wait longer for the same error)
    result = machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1", check=False,
                         extra={"S3_ENDPOINT": "http://127.0.0.1:9", "WELDR_RCLONE_RETRIES": "1",
                                "WELDR_RCLONE_LOW_LEVEL_RETRIES": "1"})
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and "error:" in result.stderr


def test_interrupted_sync_restores_the_last_complete_state(machine: Machine, bucket: str):
    # given generation 1 in S3
    branch = create(machine, bucket)
    write(branch, "a-changed.txt", "version 1")
    write(branch, "b-deleted.txt", "deleted later")
    write(branch, "c-same.txt", "unchanged")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    generation_1 = tree(branch)
    # and local changes: one file changed, one deleted, large new files (a slow upload)
    write(branch, "a-changed.txt", "version 2")
    (branch / "b-deleted.txt").unlink()
    for index in range(8):
        write(branch, f"z-new-{index}.bin", os.urandom(1_000_000))
    # when a sync is killed after it replaced a file and uploaded a new one
    slow = {"RCLONE_BWLIMIT": "400k", "WELDR_RCLONE_TRANSFERS": "1"}
    process = machine.popen("sync-to-s3.sh", "--bucket", bucket, "b1", "p1", extra=slow)
    try:
        def half_done() -> bool:
            keys = s3_keys(bucket, "branches/b1/")
            return (any(key.startswith("branches/b1/backup/") for key in keys)
                    and any(key.startswith("branches/b1/tree/z-new-") for key in keys))
        assert runner.wait_until(half_done, timeout=120, interval=0.2)
    finally:
        runner.kill_group(process.pid, signal.SIGKILL)
        process.wait()
    # then S3 really holds half a tree, but COMPLETE still names generation 1
    keys = s3_keys(bucket, "branches/b1/")
    assert "branches/b1/tree/z-new-7.bin" not in keys
    assert "generation=1" in s3_text(bucket, "branches/b1/COMPLETE")
    # when the machine is wiped and restores: exactly generation 1
    machine.wipe()
    restored = Path(machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket,
                                "b1", "p1").stdout.strip())
    assert tree(restored) == generation_1
    # when the work is redone locally and the next sync runs to the end
    write(restored, "a-changed.txt", "version 2")
    (restored / "b-deleted.txt").unlink()
    for index in range(8):
        write(restored, f"z-new-{index}.bin", os.urandom(100_000))
    expected = tree(restored)
    assert "generation=2" in machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1").stdout
    assert not any(key.startswith("branches/b1/backup/") for key in s3_keys(bucket))
    machine.wipe()
    again = Path(machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket,
                             "b1", "p1").stdout.strip())
    assert tree(again) == expected


def test_interrupted_sync_is_completed_by_the_next_sync(machine: Machine, bucket: str):
    # given generation 1 and an interrupted sync of local changes
    branch = create(machine, bucket)
    write(branch, "a.txt", "one")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    write(branch, "a.txt", "two")
    for index in range(6):
        write(branch, f"z-{index}.bin", os.urandom(1_000_000))
    process = machine.popen("sync-to-s3.sh", "--bucket", bucket, "b1", "p1",
                            extra={"RCLONE_BWLIMIT": "400k", "WELDR_RCLONE_TRANSFERS": "1"})
    try:
        assert runner.wait_until(
            lambda: any(k.startswith("branches/b1/tree/z-") for k in s3_keys(bucket)),
            timeout=120, interval=0.2)
    finally:
        runner.kill_group(process.pid, signal.SIGKILL)
        process.wait()
    local = tree(branch)
    # when the local directory (still intact) syncs again
    assert "generation=2" in machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1").stdout
    # then a restore elsewhere gets all of it
    machine.wipe()
    restored = Path(machine.run("create-branch-dir.sh", "--restore", "--bucket", bucket,
                                "b1", "p1").stdout.strip())
    assert tree(restored) == local


def test_sync_refuses_a_half_restored_directory(machine: Machine, bucket: str):
    create(machine, bucket)
    (machine.state("b1") / "restoring").touch()
    result = machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1", check=False)
    assert result.returncode == 1 and "being restored" in result.stderr
    assert s3_keys(bucket) == set()


@pytest.fixture
def small_disk(machine: Machine) -> Machine:
    """The branches directory on its own 64 MB tmpfs, so free space is under the test's control."""
    machine.branches.mkdir()
    runner.run(["mount", "-t", "tmpfs", "-o", "size=64m", "weldr-test-lru", machine.branches],
               timeout=30)
    try:
        yield machine
    finally:
        runner.run(["umount", "-l", machine.branches], timeout=30, check=False)


def make_branch(machine: Machine, bucket: str, name: str, age_hours: int) -> Path:
    branch = Path(machine.run("create-branch-dir.sh", "--bucket", bucket, name, "p1",
                              extra={"WELDR_BRANCH_MIN_FREE_MB": "0"}).stdout.strip())
    write(branch, "big.bin", os.urandom(10 * 1024 * 1024))
    machine.run("sync-to-s3.sh", "--bucket", bucket, name, "p1")
    stamp = time.time() - age_hours * 3600
    os.utime(machine.state(name) / "lastused", (stamp, stamp))
    return branch


def test_lru_removes_the_oldest_unused_directories_until_space_is_free(small_disk: Machine,
                                                                       bucket: str):
    machine = small_disk
    # given four branches of 10 MB, b1 oldest and in use, b2 with changes not yet in S3
    branches = {name: make_branch(machine, bucket, name, age)
                for name, age in (("b1", 40), ("b2", 30), ("b3", 20), ("b4", 10))}
    write(branches["b2"], "unsynced.txt", "work not yet backed up")
    holder = open(machine.state("b1") / "inuse", "a")  # noqa: SIM115
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        free = int(runner.run(["df", "-Pm", machine.branches], timeout=10)
                   .stdout.splitlines()[1].split()[3])
        # when we ask for 15 MB more than is free: two directories must go
        result = machine.run("cleanup-lru.sh", "--min-free-mb", str(free + 15))
        # then the two oldest unused went (b1 is in use), b4 stays
        assert sorted(Path(p).name for p in result.stdout.split()) == ["b2", "b3"]
        assert {p.name for p in (machine.branches / "p1").iterdir()} == {"b1", "b4"}
        # and b2's unsynced change was backed up first
        assert "branches/b2/tree/unsynced.txt" in s3_keys(bucket)
        # when the space cannot be freed without touching b1
        impossible = machine.run("cleanup-lru.sh", "--min-free-mb", "100000", check=False)
        assert impossible.returncode == 1 and "MB free" in impossible.stderr
        assert branches["b1"].exists() and not branches["b4"].exists()
    finally:
        holder.close()
    # when b1 is no longer in use, it can go too
    machine.run("cleanup-lru.sh", "--min-free-mb", "60")
    assert not branches["b1"].exists()


def test_create_runs_lru_when_space_is_short(small_disk: Machine, bucket: str):
    machine = small_disk
    old = make_branch(machine, bucket, "old", 50)
    newer = make_branch(machine, bucket, "newer", 5)
    free = int(runner.run(["df", "-Pm", machine.branches], timeout=10)
               .stdout.splitlines()[1].split()[3])
    # when
    created = machine.run("create-branch-dir.sh", "--bucket", bucket, "fresh", "p1",
                          extra={"WELDR_BRANCH_MIN_FREE_MB": str(free + 5)})
    # then the least recently used went, the newer one and the new one are there
    assert Path(created.stdout.strip()).is_dir()
    assert not old.exists() and newer.exists()


def test_user_env_never_carries_the_agents_secrets(machine: Machine):
    env = {**machine.env, "DATABASE_URL": "postgres://secret", "ANTHROPIC_API_KEY": "sk-secret",
           "PORT": "3007"}
    printed = runner.run([SCRIPTS / "weldr-user-env.sh", "--workspace", "/workspace/app"],
                         env=env, timeout=30).stdout
    assert "secret" not in printed and machine.env["S3_SECRET_ACCESS_KEY"] not in printed
    assert "export PORT=3007" in printed and "export HOST=0.0.0.0" in printed
    assert "export PATH=/workspace/app/node_modules/.bin:" in printed
    sourced = runner.run(["bash", "-c", f"source {SCRIPTS}/weldr-user-env.sh --port 3002 "
                          "&& echo $PORT $HOST $NODE_ENV"], env=env, timeout=30).stdout
    assert sourced.strip() == "3002 0.0.0.0 development"
    bad = runner.run([SCRIPTS / "weldr-user-env.sh", "--port", "1;id"], env=env, timeout=30,
                     check=False)
    assert bad.returncode == 2 and bad.stdout == ""


def test_rclone_reads_the_workspace_where_no_link_leads_out(machine: Machine, bucket: str):
    # given a workspace with links to host places (as a directory swapped for a link between
    # rclone's listing and its open would be followed: --copy-links follows them on purpose)
    branch = create(machine, bucket)
    (branch / "etc").symlink_to("/etc")
    (branch / "env").symlink_to("/proc/self/environ")
    write(branch, "mine.txt", "x")
    prelude = (f"set -o pipefail; source {SCRIPTS}/branch-common.sh; "
               f"parse_branch_args --bucket {bucket} b1 p1; rclone_init; ")
    scratch = machine.root / "tmp"
    scratch.mkdir()

    def run(command: str) -> str:
        return runner.run(["bash", "-c", prelude + command],
                          env={**machine.env, "TMPDIR": str(scratch)}, timeout=120,
                          check=False).stdout

    # when rclone follows them outside the confinement, it reads the host (the contrast)
    plain = run('"$RCLONE" lsf -R --copy-links --max-depth 2 "$BRANCH_DIR"; '
                '"$RCLONE" cat --copy-links "$BRANCH_DIR/env" | tr "\\0" "\\n"')
    assert "etc/passwd" in plain and "S3_SECRET_ACCESS_KEY" in plain
    # then inside it, the same links lead nowhere but into the empty root
    confined = run("rclone_confined --ro lsf -R --copy-links --max-depth 2 /w; "
                   'rclone_confined --ro cat --copy-links /w/env | tr "\\0" "\\n" '
                   "|| echo no-environ")
    assert "etc/passwd" not in confined and "S3_SECRET_ACCESS_KEY" not in confined
    assert machine.env["S3_SECRET_ACCESS_KEY"] not in confined
    assert "no-environ" in confined and "mine.txt" in confined
    # and nothing of the confinement is left behind: no root directory, no mount
    assert list(scratch.iterdir()) == []
    assert str(scratch) not in Path("/proc/self/mountinfo").read_text()


def test_markers_live_beside_the_directory_and_old_ones_in_it_are_unlinked(machine: Machine,
                                                                          bucket: str,
                                                                          tmp_path: Path):
    # given a directory left by an older version: its markers inside, one of them a link that
    # the sandbox planted to a host file
    branch = create(machine, bucket)
    host = tmp_path / "host-file"
    host.write_text("precious\n")
    for name in (".weldr-bucket", ".weldr-inuse"):
        (branch / name).unlink(missing_ok=True)
    (branch / ".weldr-bucket").symlink_to(host)
    (branch / ".weldr-inuse").write_text("")
    # when it is used again and backed up
    create(machine, bucket)
    write(branch, "a.txt", "a")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    # then the old names are gone (the link unlinked, its target untouched) and the markers
    # are beside the directory, in a root-only place
    assert host.read_text() == "precious\n"
    assert not (branch / ".weldr-bucket").is_symlink() and not (branch / ".weldr-inuse").exists()
    state = machine.state("b1")
    assert (state / "bucket").read_text() == f"{bucket}\n"
    names = {path.name for path in state.iterdir()}
    assert {"inuse", "lastused", "synced", "sync.lock", "bucket"} <= names
    assert oct((machine.branches / ".meta").stat().st_mode & 0o777) == "0o700"
    # and a `.weldr-*` name is now an ordinary file: backed up like any other
    write(branch, ".weldr-notes", "mine")
    machine.run("sync-to-s3.sh", "--bucket", bucket, "b1", "p1")
    assert "branches/b1/tree/.weldr-notes" in s3_keys(bucket)
