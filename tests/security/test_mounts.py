"""Attacks on the mount path, made from inside a real sandbox (POST /exec on a real mount).

- A `files` workspace IS the JuiceFS root: the sandbox makes `.weldr/workspace.ext4` there (a
  real ext4 holding a setuid-root binary, made with mkfs.ext4 and debugfs as uid 1000). The
  next mount must keep the `files` layout (recorded in S3 when the volume was made, never read
  from the files) and never check, attach or mount that image — also for a volume whose
  record is missing (made before the record existed).
- An image workspace's ext4 holds a setuid-root binary and a device node (made by root here,
  standing in for a tampered image): the host mount is nosuid,nodev, so neither has effect.
- Local mode: the sandbox replaces the agent's old marker files in its branch directory with
  links to host files; the timer's syncs, an explicit sync, the unmount and the LRU clean-up
  (all root) must leave those host files untouched, and the agent's own markers (beside the
  directory) intact.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AgentProcess, agent_client, running_agent
from weldr_agent import runner, s3

pytestmark = pytest.mark.slow

SANDBOX_UID = "1000"
LEGACY_MARKERS = (".weldr-bucket", ".weldr-inuse", ".weldr-synced", ".weldr-lastused",
                  ".weldr-sync.lock")


@pytest.fixture(scope="module")
def mounts_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("mounts-agent"), WORKSPACE_LAYOUT="files")


@pytest.fixture(scope="module")
def mounts_http(mounts_agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(mounts_agent)


@pytest.fixture(scope="module")
def local_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("local-agent"), WORKSPACE_MODE="local",
                             WELDR_BRANCH_SYNC_INTERVAL_SECONDS="1", WELDR_BRANCH_MIN_FREE_MB="0")


@pytest.fixture(scope="module")
def local_http(local_agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(local_agent)


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh bucket name; the bucket (if made) is emptied and removed afterwards."""
    name = f"sec-{secrets.token_hex(4)}"
    yield name
    _bucket_remove(name)


def _bucket_remove(name: str) -> None:
    client = s3.client()
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    except Exception:  # never made, or already gone
        pass


def _mount(http: httpx.Client, bucket: str, layout: str | None = None) -> dict:
    body = {"bucket": bucket, **({"layout": layout} if layout else {})}
    response = http.post("/mounts", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def _unmount(http: httpx.Client, bucket: str) -> None:
    response = http.post("/mounts/unmount", json={"bucket": bucket, "force": True})
    assert response.status_code in (200, 404), response.text


def _exec(http: httpx.Client, bucket: str, script: str) -> dict:
    response = http.post("/exec", json={"bucket": bucket, "command": script, "timeout": 120})
    assert response.status_code == 200, response.text
    return response.json()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mount_entry(point: Path) -> tuple[str, set[str]]:
    """(filesystem type, per-mount options) of the topmost mount at `point`."""
    found = ("", set[str]())
    with open("/proc/self/mountinfo") as table:
        for line in table:
            fields = line.split()
            if fields[4] == str(point):
                found = (line.split(" - ", 1)[1].split()[0], set(fields[5].split(",")))
    return found


def _loop_backings() -> list[str]:
    backings = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            backings.append(backing.read_text().strip())
        except OSError:
            pass
    return backings


def _as_sandbox_user(*argv: str) -> runner.Completed:
    """`argv` as uid 1000 on the host (no no_new_privs: a setuid bit would count here)."""
    return runner.run(["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                       "--clear-groups", *argv], timeout=30, check=False)


# ---------------------------------------------------------------------------------------------
# (a) files layout: a hostile .weldr/workspace.ext4 made by the sandbox
# ---------------------------------------------------------------------------------------------

# The workspace's root then holds only `.weldr`, as an image volume's root does.
HOSTILE_IMAGE = r"""
set -e
mkdir -p .weldr/payload
cp /usr/bin/id .weldr/payload/id
truncate -s 32M .weldr/workspace.ext4
mkfs.ext4 -q -F -d .weldr/payload .weldr/workspace.ext4
# uid 1000 edits its own image file: a setuid-root binary, no privilege needed
debugfs -w -R "set_inode_field /id uid 0" .weldr/workspace.ext4
debugfs -w -R "set_inode_field /id gid 0" .weldr/workspace.ext4
debugfs -w -R "set_inode_field /id mode 0104755" .weldr/workspace.ext4
debugfs -R "stat /id" .weldr/workspace.ext4 2>/dev/null | head -n 3
echo mine > .weldr/work.txt
ls -A
"""


def test_a_hostile_image_in_a_files_workspace_is_never_checked_attached_or_mounted(
        mounts_http: httpx.Client, mounts_agent: AgentProcess, bucket: str):
    # given a files workspace in which the sandbox made a real ext4 with a setuid-root binary
    mounted = _mount(mounts_http, bucket)
    assert mounted["layout"] == "files"
    workspace = Path(mounted["path"])
    made = _exec(mounts_http, bucket, HOSTILE_IMAGE)
    assert made["exit_code"] == 0, made
    assert "Mode:  04755" in made["stdout"] and "User:     0" in made["stdout"], made["stdout"]
    # the root holds nothing else (but JuiceFS's own entries)
    assert set(os.listdir(workspace)) - {".trash", ".accesslog", ".stats", ".config"} \
        == {".weldr"}
    image = workspace / ".weldr" / "workspace.ext4"
    digest = _digest(image)
    # (JuiceFS's FUSE mount itself is nosuid,nodev: its default, now also asked for explicitly)
    kind, options = _mount_entry(workspace)
    assert kind.startswith("fuse.juicefs") and {"nosuid", "nodev"} <= options
    _unmount(mounts_http, bucket)
    for record_lost in (False, True):
        if record_lost:
            # as for a volume made before the layout was recorded
            s3.client().delete_object(Bucket=bucket, Key="weldr-meta/layout")
        log_size = mounts_agent.log.stat().st_size
        # when it is mounted again, no layout asked: the volume's own
        again = _mount(mounts_http, bucket)
        # then it is the files layout, the workspace is JuiceFS, the image only a user file
        assert again["layout"] == "files", (record_lost, again)
        assert _mount_entry(workspace)[0].startswith("fuse.juicefs")
        assert not [name for name in _loop_backings() if bucket in name]
        assert runner.run(["losetup", "-j", str(image)], timeout=30).stdout == ""
        with open(mounts_agent.log, "rb") as log:
            log.seek(log_size)
            commands = log.read().decode(errors="replace")
        assert "e2fsck" not in commands and "losetup" not in commands, commands[-2000:]
        assert _digest(image) == digest and (workspace / ".weldr/work.txt").read_text() == "mine\n"
        assert not (workspace / "id").exists()
        _unmount(mounts_http, bucket)
    # and the record says files: written when the volume was made, and again once from the
    # metadata of the volume whose record was lost
    assert s3.client().get_object(Bucket=bucket, Key="weldr-meta/layout")["Body"].read() \
        == b"files"


# ---------------------------------------------------------------------------------------------
# (b) image layout: setuid files and device nodes inside the ext4
# ---------------------------------------------------------------------------------------------


def test_setuid_files_and_device_nodes_in_an_image_mean_nothing_on_the_host(
        mounts_http: httpx.Client, bucket: str):
    # given an image workspace whose ext4 holds a setuid-root binary and a device node (made
    # by root here: a stand-in for an image whose bytes someone tampered with)
    mounted = _mount(mounts_http, bucket, layout="image")
    workspace = Path(mounted["path"])
    try:
        assert _mount_entry(workspace)[0] == "ext4"
        shutil.copy("/usr/bin/id", workspace / "suid-id")
        os.chown(workspace / "suid-id", 0, 0)
        os.chmod(workspace / "suid-id", 0o4755)
        os.mknod(workspace / "null-dev", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        # then on the host, uid 1000 gains nothing from either
        ran = _as_sandbox_user(str(workspace / "suid-id"))
        assert ran.returncode == 0 and "euid=0" not in ran.stdout, ran.stdout
        wrote = _as_sandbox_user("sh", "-c", f"echo x > {workspace / 'null-dev'}")
        assert wrote.returncode != 0 and "Permission denied" in wrote.stderr, wrote
        # because the ext4 is mounted nosuid,nodev
        assert {"nosuid", "nodev"} <= _mount_entry(workspace)[1]
        # nor inside the sandbox
        inside = _exec(mounts_http, bucket, "./suid-id; echo x > null-dev && echo wrote")
        assert "euid=0" not in inside["stdout"] and "wrote" not in inside["stdout"], inside
    finally:
        _unmount(mounts_http, bucket)


# ---------------------------------------------------------------------------------------------
# (c) local mode: markers planted as links to host files
# ---------------------------------------------------------------------------------------------


def _untouched(victims: dict[str, Path], content: str) -> None:
    changed = {name: (victim.read_text(), victim.stat().st_mtime)
               for name, victim in victims.items()
               if victim.read_text() != f"{content}\n" or victim.stat().st_mtime != 1_000_000_000}
    assert not changed, changed


def test_marker_links_planted_in_a_branch_directory_leave_the_host_untouched(
        local_http: httpx.Client, local_agent: AgentProcess, bucket: str, tmp_path: Path):
    # given host files, one per marker name, holding the name of another tenant's bucket
    other = f"sec-{secrets.token_hex(4)}"
    s3.client().create_bucket(Bucket=other)
    host = tmp_path / "host"
    host.mkdir()
    victims = {name: host / f"victim{name}" for name in LEGACY_MARKERS}
    for victim in victims.values():
        victim.write_text(f"{other}\n")
        os.utime(victim, (1_000_000_000, 1_000_000_000))
    try:
        # and a branch directory mounted for the bucket, where the sandbox replaces every
        # marker name with a link to one of those host files
        workspace = Path(_mount(local_http, bucket)["path"])
        links = "; ".join(f"rm -f {name}; ln -s {victims[name]} {name}" for name in victims)
        planted = _exec(local_http, bucket, f"set -e; {links}; echo work > work.txt; ls -la")
        assert planted["exit_code"] == 0, planted
        assert all((workspace / name).is_symlink() for name in victims)
        # when the agent's timer, an explicit sync, the unmount and the LRU clean-up run
        time.sleep(4)  # several ticks of the 1 s timer
        (workspace / "more.txt").write_text("more")
        assert local_http.post(f"/mounts/{bucket}/sync").status_code == 200
        time.sleep(2)
        state = Path(local_agent.env["WELDR_ENV_VOL"]) / "branches" / ".meta" / "local" / bucket
        _unmount(local_http, bucket)
        # then every host file is as it was: content and mtime
        _untouched(victims, other)
        # and the agent's own markers (beside the directory) are intact and its own
        assert (state / "bucket").read_text() == f"{bucket}\n"
        assert (state / "synced").is_file() and not (state / "synced").is_symlink()
        assert stat.S_IMODE((state.parent.parent).stat().st_mode) == 0o700
        cleanup_env = runner.clean_env({
            "WELDR_ENV_VOL": local_agent.env["WELDR_ENV_VOL"],
            "WELDR_BRANCHES_DIR": str(Path(local_agent.env["WELDR_ENV_VOL"]) / "branches"),
            **{key: os.environ[key] for key in os.environ if key.startswith("S3_")},
        })
        cleaned = runner.run([Path(__file__).resolve().parents[2] / "scripts" / "cleanup-lru.sh",
                              "--min-free-mb", str(10**8)], env=cleanup_env, timeout=300,
                             check=False)
        assert "removed" in (Path(local_agent.env["WELDR_ENV_VOL"]) / "branches.log").read_text()
        assert not workspace.exists(), cleaned
        _untouched(victims, other)
        # the work went to the bucket's own backup, nothing to the other tenant's bucket
        keys = {item["Key"] for item in
                s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert f"branches/{bucket}/tree/work.txt" in keys
        assert not s3.client().list_objects_v2(Bucket=other).get("Contents")
    finally:
        _unmount(local_http, bucket)
        _bucket_remove(other)
