"""Snapshots and restores of image workspaces, through a real agent: a real JuiceFS volume over
the test S3 server, a real loop-mounted ext4, real sandboxes writing into it (POST /exec)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, AgentProcess, agent_client, running_agent
from weldr_agent import runner

pytestmark = pytest.mark.slow
RECORD = re.compile(rb"record (\d{8}) x{64}\n")
# A writer inside the sandbox: numbered, fixed-size records appended one write() each.
# Endless: it must still be writing when the restore stops it (a bounded loop finished first on
# a quiet machine, and the restore then had no command to report).
WRITER = ("mkdir -p log; i=0; while :; do "
          "printf 'record %08d %s\\n' $i " + "x" * 64 + " >> log/records.txt; "
          "i=$((i+1)); done")
FIXTURE_MODULES = REPO / "tests" / "previews" / "fixtures" / "node_modules"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("snapshots-agent"), UPLOAD_DELAY="2s",
                             LITESTREAM_SYNC_INTERVAL="1s", RESTORE_MARGIN_SECONDS="2")


@pytest.fixture(scope="module")
def http(agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(agent)


@pytest.fixture
def bucket(http: httpx.Client) -> Iterator[str]:
    name = f"snap-{secrets.token_hex(3)}"
    response = http.post("/mounts", json={"bucket": name, "layout": "image"})
    assert response.status_code == 201, response.text
    try:
        yield name
    finally:
        http.post("/mounts/unmount", json={"bucket": name, "force": True})


def _workspace(agent: AgentProcess, bucket: str) -> Path:
    return Path(agent.env["WORKSPACE_BASE"]) / bucket


def _snapshot_image(agent: AgentProcess, bucket: str, snapshot_id: str) -> Path:
    return (Path(agent.env["WELDR_ENV_VOL"]) / "volumes" / bucket / ".weldr" / "snapshots"
            / f"{snapshot_id}.ext4")


def _exec(http: httpx.Client, bucket: str, command: str, **extra: object) -> dict:
    response = http.post("/exec", json={"bucket": bucket, "command": command, "timeout": 120,
                                        **extra})
    assert response.status_code in (200, 202), response.text
    return response.json()


@contextlib.contextmanager
def snapshot_view(image: Path, mount_point: Path) -> Iterator[Path]:
    """The snapshot's ext4, mounted read-only (no journal replay: a frozen image needs none)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    device = runner.run(["losetup", "--find", "--show", "--read-only", str(image)],
                        timeout=30).stdout.strip()
    try:
        runner.run(["mount", "-t", "ext4", "-o", "ro,noload,nosuid,nodev", device,
                    str(mount_point)], timeout=30)
        try:
            yield mount_point
        finally:
            runner.run(["umount", str(mount_point)], timeout=30)
    finally:
        runner.run(["losetup", "--detach", device], timeout=30, check=False)


def tree_digest(root: Path) -> dict[str, tuple]:
    """Every entry under root (lost+found aside): type, mode, owner, and content or target."""
    found: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if not (folder == str(root) and name == "lost+found")]
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                body = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                body = hashlib.sha256(path.read_bytes()).digest()
            else:
                body = b""
            found[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode),
                                                  stat.S_IMODE(info.st_mode), info.st_uid,
                                                  body)
    return found


def _records_whole(text: bytes) -> int:
    """The number of records, checking each is whole and they run 0, 1, 2, … without a gap."""
    lines = text.splitlines(keepends=True)
    for index, line in enumerate(lines):
        match = RECORD.fullmatch(line)
        assert match is not None, f"torn record {index}: {line[:100]!r}"
        assert int(match.group(1)) == index
    return len(lines)


def _app(http: httpx.Client, bucket: str, workspace: Path) -> None:
    """A small app: node_modules, a git repository with history, an ignored build output."""
    shutil.copytree(FIXTURE_MODULES, workspace / "node_modules", symlinks=True)
    (workspace / "src").mkdir()
    (workspace / "src" / "index.js").write_text("console.log('v1')\n")
    (workspace / "dist").mkdir()
    (workspace / "dist" / "bundle.js").write_bytes(secrets.token_bytes(300_000))
    os.symlink("src/index.js", workspace / "main.js")
    for path in [workspace, *workspace.rglob("*")]:
        os.lchown(path, 1000, 1000)
    done = _exec(http, bucket, "printf 'dist\\nnode_modules\\n' > .gitignore && git init -q && "
                               "git add -A && git -c user.name=t -c user.email=t@t commit -qm v1 "
                               "&& git log --oneline | wc -l")
    assert done["exit_code"] == 0 and done["stdout"].strip() == "1", done


def test_snapshots_under_a_writer_are_whole_and_restore_byte_for_byte(agent, http, bucket,
                                                                       tmp_path):
    # given an app in the workspace and a writer appending numbered records in the sandbox
    workspace = _workspace(agent, bucket)
    _app(http, bucket, workspace)
    writer = _exec(http, bucket, WRITER, background=True, timeout=600)
    assert runner.wait_until(lambda: (workspace / "log" / "records.txt").exists(), timeout=30)
    # when three snapshots are taken while it writes
    taken = []
    for index in range(3):
        time.sleep(0.3)
        response = http.post(f"/mounts/{bucket}/snapshots", json={"name": f"during write {index}"})
        assert response.status_code == 201, response.text
        taken.append(response.json())
    # then each snapshot is a clean ext4 whose log holds only whole, consecutive records
    counts, digests = [], []
    for index, snap in enumerate(taken):
        image = _snapshot_image(agent, bucket, snap["id"])
        check = runner.run(["e2fsck", "-fn", str(image)], timeout=120, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with snapshot_view(image, tmp_path / f"view{index}") as view:
            counts.append(_records_whole((view / "log" / "records.txt").read_bytes()))
            digests.append(tree_digest(view))
    assert 0 < counts[0] <= counts[1] <= counts[2], counts
    assert taken[0]["frozen_ms"] > 0 and taken[0]["name"] == "during write 0"
    listed = http.get(f"/mounts/{bucket}/snapshots?sizes=1").json()["snapshots"]
    assert [item["id"] for item in listed] == [item["id"] for item in taken]
    # each holds the records written after it (and before the next), nothing else holds them
    assert all(item["size_bytes"] is not None for item in listed), listed
    # when the workspace changes and the second snapshot is restored while the writer runs
    (workspace / "src" / "index.js").write_text("console.log('v2')\n")
    shutil.rmtree(workspace / "node_modules")
    restored = http.post(f"/mounts/{bucket}/snapshots/{taken[1]['id']}/restore")
    # then the writer was stopped and reported, and the workspace is the snapshot, byte for byte
    assert restored.status_code == 200, restored.text
    assert [item["id"] for item in restored.json()["commands_stopped"]] == [writer["id"]]
    assert http.get(f"/exec/{writer['id']}").json()["status"] == "killed"
    assert tree_digest(workspace) == digests[1]
    assert (workspace / "src" / "index.js").read_text() == "console.log('v1')\n"
    log = _exec(http, bucket, "git status --porcelain && git log --oneline | wc -l && "
                              "ls node_modules | wc -l && touch new-file")
    # (the writer's log is the one untracked folder; node_modules is ignored, as before)
    assert log["exit_code"] == 0 and log["stdout"].split() == ["??", "log/", "1", "10"], log
    # and the snapshot is kept, the other ones too
    assert len(http.get(f"/mounts/{bucket}/snapshots").json()["snapshots"]) == 3


def _shell(agent: AgentProcess, code: str) -> str:
    return agent.manage("shell", "-c", code).stdout.strip()


def test_bad_inputs_get_clear_4xx(agent, http, bucket):
    snap = http.post(f"/mounts/{bucket}/snapshots", json={}).json()
    unknown = secrets.token_hex(16)
    cases = [
        (http.get(f"/mounts/{bucket}/snapshots/../x/restore"), 404, None),
        (http.post(f"/mounts/{bucket}/snapshots/{unknown}/restore"), 404, "snapshot_not_found"),
        (http.post(f"/mounts/{bucket}/snapshots/..%2F..%2Fetc/restore"), 404, None),
        (http.delete(f"/mounts/{bucket}/snapshots/{unknown}"), 404, "snapshot_not_found"),
        (http.post(f"/mounts/{bucket}/snapshots", json={"name": "../../etc/passwd"}), 400,
         "invalid_snapshot_name"),
        (http.post(f"/mounts/{bucket}/snapshots", json={"name": "a\nb"}), 400,
         "invalid_snapshot_name"),
        (http.post("/mounts/Not_A_Bucket/snapshots", json={}), 400, "invalid_bucket"),
        (http.get("/mounts/not-mounted-here/snapshots"), 404, "not_mounted"),
        (http.put(f"/mounts/{bucket}/snapshots/policy", json={"keep": -1, "max_age_days": 1}),
         400, "invalid"),
    ]
    for response, status_code, code in cases:
        assert response.status_code == status_code, response.text
        if code:
            assert response.json()["code"] == code, response.text
    # a workflow run active on a branch of this bucket: restore is 409, nothing stopped
    _shell(agent, "from workflows.models import Project, Branch, WorkflowRun; "
                  "p = Project.objects.create(name='p', owner_id='o'); "
                  f"b = Branch.objects.create(project=p, name='main', bucket='{bucket}'); "
                  "WorkflowRun.objects.create(branch=b, model='m', status='running')")
    busy = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/restore")
    assert busy.status_code == 409 and busy.json()["code"] == "run_active", busy.text
    _shell(agent, "from workflows.models import WorkflowRun; "
                  f"WorkflowRun.objects.filter(branch__bucket='{bucket}').delete()")
    assert http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/restore").status_code == 200


def test_the_files_layout_refuses_snapshots(http):
    name = f"snapf-{secrets.token_hex(3)}"
    assert http.post("/mounts", json={"bucket": name, "layout": "files"}).status_code == 201
    try:
        response = http.post(f"/mounts/{name}/snapshots", json={})
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "snapshots_unavailable"
        assert "image layout" in response.json()["detail"]
    finally:
        http.post("/mounts/unmount", json={"bucket": name, "force": True})


def test_a_fork_is_an_independent_workspace_from_a_snapshot(agent, http, bucket, tmp_path):
    # given an app and a snapshot of it
    workspace = _workspace(agent, bucket)
    _app(http, bucket, workspace)
    snap = http.post(f"/mounts/{bucket}/snapshots", json={"name": "base"}).json()
    with snapshot_view(_snapshot_image(agent, bucket, snap["id"]), tmp_path / "v") as view:
        expected = tree_digest(view)
    fork = f"{bucket}-try2"
    # when it is forked
    made = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork", json={"name": fork})
    # then a new workspace is mounted, byte for byte the snapshot, with its own sandbox
    assert made.status_code == 201, made.text
    assert (made.json()["parent"], made.json()["status"]) == (bucket, "mounted")
    forked = Path(made.json()["path"])
    assert forked == _workspace(agent, fork) and tree_digest(forked) == expected
    assert {m["bucket"] for m in http.get("/mounts").json()["mounts"]} >= {bucket, fork}
    done = _exec(http, fork, "echo fork > src/index.js && git log --oneline | wc -l")
    assert done["exit_code"] == 0 and done["stdout"].strip() == "1", done
    (workspace / "src" / "index.js").write_text("console.log('parent')\n")
    assert (forked / "src" / "index.js").read_text() == "fork\n"
    assert (workspace / "src" / "index.js").read_text() == "console.log('parent')\n"
    assert http.post(f"/mounts/{fork}/sync").status_code == 200
    # and bad input, the parent's unmount while it is mounted, then its own unmount
    again = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork", json={"name": fork})
    assert again.status_code == 409 and again.json()["code"] == "fork_conflict", again.text
    bad = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork", json={"name": "../x"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_bucket", bad.text
    unknown = http.post(f"/mounts/{bucket}/snapshots/{secrets.token_hex(16)}/fork",
                        json={"name": f"{bucket}-x"})
    assert unknown.status_code == 404, unknown.text
    # a fork is never handed out as the bucket of its name (that bucket's writes would land in
    # the parent's volume)
    squat = http.post("/mounts", json={"bucket": fork})
    assert squat.status_code == 409 and squat.json()["code"] == "fork_conflict", squat.text
    busy = http.post("/mounts/unmount", json={"bucket": bucket})
    assert busy.status_code == 409 and "forks" in busy.json()["detail"], busy.text
    gone = http.post("/mounts/unmount", json={"bucket": fork})
    assert gone.status_code == 200, gone.text
    assert fork not in {m["bucket"] for m in http.get("/mounts").json()["mounts"]}
    assert not forked.is_mount() and (workspace / "src" / "index.js").is_file()
    assert not (Path(agent.env["WELDR_ENV_VOL"]) / "volumes" / bucket / ".weldr" / "forks"
                / fork).exists()


def test_a_promoted_fork_becomes_the_buckets_workspace(agent, http, bucket):
    # given a fork that went another way than its parent
    workspace = _workspace(agent, bucket)
    assert _exec(http, bucket, "echo base > app.txt")["exit_code"] == 0
    snap = http.post(f"/mounts/{bucket}/snapshots", json={}).json()
    fork = f"{bucket}-b"
    assert http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork",
                     json={"name": fork}).status_code == 201
    assert _exec(http, fork, "echo approach-b > app.txt && mkdir -p dist && "
                             "echo built > dist/out.js")["exit_code"] == 0
    (workspace / "app.txt").write_text("approach-a\n")
    # when it is promoted
    promoted = http.post(f"/mounts/{fork}/promote")
    # then the bucket's workspace is the fork's, the fork is gone, the snapshot stays
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["bucket"], promoted.json()["promoted"]) == (bucket, fork)
    assert (workspace / "app.txt").read_text() == "approach-b\n"
    assert (workspace / "dist" / "out.js").read_text() == "built\n"
    assert fork not in {m["bucket"] for m in http.get("/mounts").json()["mounts"]}
    assert [s["id"] for s in http.get(f"/mounts/{bucket}/snapshots").json()["snapshots"]] \
        == [snap["id"]]
    assert _exec(http, bucket, "cat app.txt")["stdout"] == "approach-b\n"
    assert http.post(f"/mounts/{fork}/promote").status_code == 404
