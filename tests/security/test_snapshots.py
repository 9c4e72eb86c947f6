"""Attacks on snapshots, made from inside a real sandbox (POST /exec on a real image workspace).

The snapshot area (clones and sidecars) lives in the JuiceFS volume's root-only `.weldr/`,
which no sandbox sees: the sandbox cannot read it, and what it plants in the workspace under the
same names (a forged sidecar and a crafted ext4 made with mkfs.ext4 as uid 1000) is never
listed or restored. A hostile snapshot name never becomes a path.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.mounts import test_snapshots as functional
from weldr_agent import runner

pytestmark = pytest.mark.slow
# One real agent per module (image layout, short durability windows), a fresh image bucket per
# test, and POST /exec in its sandbox: the same fixtures as the functional tests.
agent, http, bucket, _exec = functional.agent, functional.http, functional.bucket, functional._exec


# Run as uid 1000 in the sandbox: forge the agent's snapshot area inside the workspace, at
# every name the agent uses (.weldr/snapshots/<id>.{json,ext4}, and at the root), with a real
# ext4 holding a file the real snapshot does not have.
FORGE = """set -e
for dir in .weldr/snapshots snapshots .; do
  mkdir -p "$dir"
  truncate -s 64M "$dir/$ID.ext4"
  mkfs.ext4 -q -F "$dir/$ID.ext4"
  printf 'pwned\\n' > /tmp/pwned
  debugfs -w -R 'write /tmp/pwned pwned' "$dir/$ID.ext4" >/dev/null 2>&1
  printf '{"id": "%s", "bucket": "%s", "name": "forged", "note": "", "kind": "manual", \
"created_at": "2099-01-01T00:00:00+00:00", "run_id": "", "frozen_ms": 1, "version": 1}' \
"$ID" "$BUCKET" > "$dir/$ID.json"
done
echo forged
"""


def test_the_sandbox_can_neither_reach_nor_forge_snapshots(agent, http, bucket):
    # given a real snapshot of the workspace
    assert _exec(http, bucket, "echo original > file.txt")["exit_code"] == 0
    real = http.post(f"/mounts/{bucket}/snapshots", json={"name": "real"}).json()
    area = Path(agent.env["WELDR_ENV_VOL"]) / "volumes" / bucket / ".weldr" / "snapshots"
    assert (area / f"{real['id']}.json").is_file()
    # when the sandbox looks for the snapshot area by its host path, by its id, and around it
    by_path = _exec(http, bucket, f"cat '{area}/{real['id']}.json'; ls '{area}'")
    by_id = _exec(http, bucket, f"find / -xdev -name '{real['id']}*' 2>/dev/null; "
                                "ls -a /workspace /workspace/..")
    # then no path leads there
    assert by_path["exit_code"] != 0 and by_path["stdout"] == "", by_path
    assert by_path["stderr"].count("No such file or directory") == 2, by_path
    assert real["id"] not in by_id["stdout"] and ".weldr" not in by_id["stdout"], by_id
    # when it forges a snapshot in the workspace under every name the agent uses
    forged_id = secrets.token_hex(16)
    forged = _exec(http, bucket, f"ID={forged_id} BUCKET={bucket}\n{FORGE}")
    assert forged["exit_code"] == 0 and "forged" in forged["stdout"], forged
    # then it is never listed, restoring it is 404, deleting it too, and the real one is intact
    listed = http.get(f"/mounts/{bucket}/snapshots").json()["snapshots"]
    assert [item["id"] for item in listed] == [real["id"]]
    for response in (http.post(f"/mounts/{bucket}/snapshots/{forged_id}/restore"),
                     http.delete(f"/mounts/{bucket}/snapshots/{forged_id}")):
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "snapshot_not_found"
    restored = http.post(f"/mounts/{bucket}/snapshots/{real['id']}/restore")
    assert restored.status_code == 200, restored.text
    after = _exec(http, bucket, "cat file.txt; ls -a")
    assert after["stdout"].split() == ["original", ".", "..", "file.txt"], after


def test_a_hostile_name_never_becomes_a_path(agent, http, bucket):
    hostile = ["../../../etc/cron.d/x", "/etc/passwd", "a/b", "..", "x\ny", "\u202egnp.exe",
               "a" * 65, "$(id)", "name\x00nul"]
    for name in hostile:
        response = http.post(f"/mounts/{bucket}/snapshots", json={"name": name})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["code"] in ("invalid_snapshot_name", "invalid"), response.text
    # a valid name is stored in the sidecar only: the area holds <32 hex>.ext4 / .json alone
    made = http.post(f"/mounts/{bucket}/snapshots", json={"name": "v1 before-refactor.2"})
    assert made.status_code == 201, made.text
    area = Path(agent.env["WELDR_ENV_VOL"]) / "volumes" / bucket / ".weldr" / "snapshots"
    assert sorted(path.name for path in area.iterdir()) == sorted(
        [f"{made.json()['id']}.ext4", f"{made.json()['id']}.json"])
    for bad_id in ("..", "..%2F..%2Fworkspace.ext4", "0" * 31, "G" * 32, "policy"):
        response = http.post(f"/mounts/{bucket}/snapshots/{bad_id}/restore")
        assert response.status_code == 404, (bad_id, response.text)


def test_a_fork_sees_neither_its_parent_nor_the_snapshot_area(agent, http, bucket):
    # given a parent with a secret written after the snapshot, and a fork of that snapshot
    assert _exec(http, bucket, "echo shared > shared.txt")["exit_code"] == 0
    snap = http.post(f"/mounts/{bucket}/snapshots", json={}).json()
    secret = f"parent-only-{secrets.token_hex(8)}"
    assert _exec(http, bucket, f"echo {secret} > secret.txt")["exit_code"] == 0
    fork = f"{bucket}-f"
    made = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork", json={"name": fork})
    assert made.status_code == 201, made.text
    env = Path(agent.env["WELDR_ENV_VOL"])
    parent_ws = Path(agent.env["WORKSPACE_BASE"]) / bucket
    try:
        # when the fork's sandbox looks for the parent's workspace, the snapshot and its own image
        looked = _exec(http, fork, f"cat '{parent_ws}/secret.txt'; ls '{env}/volumes/{bucket}'; "
                                   f"grep -rs {secret} / --exclude-dir=proc 2>/dev/null "
                                   "| head -1; cat shared.txt; ls -a")
        # then it has its own files only
        assert secret not in looked["stdout"], looked
        assert looked["stdout"].split() == ["shared", ".", "..", "shared.txt"], looked
    finally:
        assert http.post("/mounts/unmount", json={"bucket": fork}).status_code == 200


# Run as uid 1000 in the sandbox: hostile ext4 content — a setuid copy of `id` of its own, and
# a real ext4 image made with mkfs.ext4 and debugfs whose superblock asks for everything
# (an error recorded, a journal to replay) and which holds a setuid-root `id`, planted at every
# name an image has in the volume.
HOSTILE_EXT4 = """set -e
cp /usr/bin/id myid && chmod 4755 myid
truncate -s 64M evil.ext4 && mkfs.ext4 -q -F evil.ext4
for request in 'write /usr/bin/id rootid' 'sif rootid uid 0' 'sif rootid mode 0104755' \
               'ssv state 3' 'feature needs_recovery'; do
  debugfs -w -R "$request" evil.ext4 >/dev/null 2>&1
done
for dir in .weldr .weldr/snapshots ".weldr/forks/$FORK/.weldr"; do
  mkdir -p "$dir" && cp evil.ext4 "$dir/workspace.ext4"
done
echo planted
"""


def _mount_source(mount_point: Path) -> tuple[str, set[str], str]:
    """(filesystem type, mount options, the loop device's backing file) of a mount point."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mount_point):
            tail = fields[fields.index("-") + 1:]
            backing = Path(f"/sys/block/{Path(tail[1]).name}/loop/backing_file")
            return tail[0], set(fields[5].split(",")), (backing.read_text().strip()
                                                       if backing.exists() else "")
    raise AssertionError(f"{mount_point} is not mounted")


def _e2fsck_lines(agent, since: int) -> list[str]:
    with open(agent.log, "rb") as handle:
        handle.seek(since)
        return [line for line in handle.read().decode(errors="replace").splitlines()
                if "+ e2fsck" in line]


def test_forks_and_restores_skip_e2fsck_only_for_a_clean_clone_and_grant_nothing(agent, http,
                                                                                   bucket):
    # given hostile ext4 content made in the sandbox (a setuid binary of its own, and crafted
    # images asking for a journal replay, at every name an image has in the volume)
    volume = Path(agent.env["WELDR_ENV_VOL"]) / "volumes" / bucket
    base = Path(agent.env["WORKSPACE_BASE"])
    fork, tampered_fork = f"{bucket}-h", f"{bucket}-t"
    planted = _exec(http, bucket, f"FORK={fork}\n{HOSTILE_EXT4}")
    assert planted["exit_code"] == 0 and "planted" in planted["stdout"], planted
    since = agent.log.stat().st_size
    # when it is snapshotted, forked and restored (the clone is clean: no e2fsck)
    snap = http.post(f"/mounts/{bucket}/snapshots", json={}).json()
    made = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/fork", json={"name": fork})
    assert made.status_code == 201, made.text
    try:
        restored = http.post(f"/mounts/{bucket}/snapshots/{snap['id']}/restore")
        assert restored.status_code == 200, restored.text
        # then each workspace is the kernel's ext4 of the agent's own clone, nosuid,nodev
        for point, image in ((base / fork, volume / ".weldr" / "forks" / fork / ".weldr"),
                             (base / bucket, volume / ".weldr")):
            kind, options, backing = _mount_source(point)
            assert kind == "ext4" and {"nosuid", "nodev"} <= options, (point, options)
            assert backing == str(image / "workspace.ext4"), (point, backing)
        # no image the sandbox made was ever attached, and e2fsck never ran (a clean clone)
        attached = [path.read_text().strip()
                    for path in Path("/sys/block").glob("loop*/loop/backing_file")]
        assert not [path for path in attached if path.startswith(str(base))], attached
        assert _e2fsck_lines(agent, since) == []
        # and the setuid binary gives the fork's sandbox nothing
        ran = _exec(http, fork, "./myid; ls -l myid")
        assert ran["exit_code"] == 0 and "euid=0" not in ran["stdout"], ran
        assert "rws" in ran["stdout"], ran  # the bit is there; the mount ignores it
        # given a snapshot whose image was tampered with (root here, standing in for someone
        # with the bucket's keys): a setuid-root binary in it and an error recorded
        second = http.post(f"/mounts/{bucket}/snapshots", json={}).json()
        image = volume / ".weldr" / "snapshots" / f"{second['id']}.ext4"
        for request in ("write /usr/bin/id rootid", "sif rootid uid 0",
                        "sif rootid mode 0104755", "ssv state 3"):
            runner.run(["debugfs", "-w", "-R", request, str(image)], timeout=60)
        since = agent.log.stat().st_size
        # when it is forked, e2fsck -p checks it first (its superblock is not clean)
        made = http.post(f"/mounts/{bucket}/snapshots/{second['id']}/fork",
                         json={"name": tampered_fork})
        assert made.status_code == 201, made.text
        checked = _e2fsck_lines(agent, since)
        assert len(checked) == 1 and f"/forks/{tampered_fork}/" in checked[0], checked
        # and its setuid-root binary is nothing in the fork's sandbox
        info = (base / tampered_fork / "rootid").stat()
        assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o4755)
        ran = _exec(http, tampered_fork, "./rootid")
        assert ran["exit_code"] == 0 and "euid=0" not in ran["stdout"], ran
        assert {"nosuid", "nodev"} <= _mount_source(base / tampered_fork)[1]
    finally:
        for name in (fork, tampered_fork):
            http.post("/mounts/unmount", json={"bucket": name, "force": True})
