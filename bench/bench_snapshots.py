#!/usr/bin/env python3
"""Snapshot, restore and machine-loss restore of an image workspace, beside cp -a and git.

Runs the agent's own services in-process (mounts.snapshots) against its own `rclone serve s3`
on a free loopback port, in a temporary directory, with the production JuiceFS options
(writeback, UPLOAD_DELAY=5m). The workspace: --npm-copies copies of npm's own package tree
(/usr/lib/node_modules/npm: ~1,940 files, 14 MB each) and --vite-copies of the preview tests'
Vite node_modules (tests/previews/fixtures: ~185 files, 19 MB each) under node_modules/, plus
--sources source files tracked by git.

Prints, for each amount of unflushed writes (MB written just before the snapshot, still in
the page cache), the snapshot time (service call) and the writers' pause (freeze to thaw),
p50 and max of --repeat; the restore time; the time to mount the bucket on a "new machine"
(local state deleted, metadata restored from S3 after a zero-RPO sync), list and restore a
snapshot; a fork to a mounted, writable workspace; and in the same run `cp -a` of the tree,
`git stash -u` + `pop`, `git worktree add`.

The writes before each snapshot are timed too (what the writer paid), and the machine's data not
yet on its disk just before each write is printed (page cache Dirty + Writeback: the staging
blocks of the earlier snapshots' writes, which this VM's disk drains at ~100 MB/s). --settle-mb N
waits before each write until that is at most N MB or stops falling, so that the unflushed data
is the write's own. --bdi-limit-mb N caps the
dirty data of the workspace's loop device in the kernel (its bdi's max_bytes, strict_limit), to
see what keeping dirty data from accumulating costs the writer and saves the snapshot. The
agent's settings come from the environment: JUICEFS_MEMORY_CGROUP_MB=0 runs JuiceFS unconfined
(docs/snapshots.md, "Fresh memory").

Usage: .venv/bin/python bench/bench_snapshots.py [--npm-copies 14] [--vite-copies 6]
       [--sources 2000] [--dirty 0,10,25,50,100] [--repeat 5] [--settle-mb 0]
       [--bdi-limit-mb 0]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import agent_in_process  # noqa: E402

NPM = Path("/usr/lib/node_modules/npm")
# (resolved: in a worktree the fixture folder is a link to the main checkout's)
VITE = (ROOT / "tests" / "previews" / "fixtures" / "node_modules").resolve()
# git on the workspace runs as the sandbox user (uid 1000, who owns the tree: `build` hands it
# over), never as root: a repository's hooks and config run with the privileges of whoever runs
# git (docs/security.md).
GIT = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "env", "HOME=/tmp",
       "git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]



def seconds(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def build(workspace: Path, args: argparse.Namespace) -> tuple[int, int]:
    """The app: node_modules copies and a git repository of source files; (files, bytes)."""
    from weldr_agent import runner

    modules = workspace / "node_modules"
    modules.mkdir()
    for index in range(args.npm_copies):
        runner.run(["cp", "-a", str(NPM), str(modules / f"npm{index}")], timeout=600)
    for index in range(args.vite_copies):
        runner.run(["cp", "-a", str(VITE), str(modules / f"vite{index}")], timeout=600)
    for index in range(args.sources):
        folder = workspace / "src" / f"pkg{index % 40}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{index}.ts").write_text(f"export const v{index} = {index};\n" * 20)
    (workspace / ".gitignore").write_text("node_modules\n")
    runner.run(["chown", "-R", "1000:1000", str(workspace)], timeout=600)
    runner.run([*GIT, "init", "-q"], cwd=workspace, timeout=60)
    runner.run([*GIT, "add", "-A"], cwd=workspace, timeout=600)
    runner.run([*GIT, "commit", "-qm", "app"], cwd=workspace, timeout=600)
    files = size = 0
    for folder, _dirs, names in os.walk(workspace):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


def dirty(workspace: Path, megabytes: int) -> None:
    """`megabytes` of new data in the page cache (written, not synced)."""
    folder = workspace / "dirty"
    folder.mkdir(exist_ok=True)
    for index in range(megabytes):
        (folder / f"{secrets.token_hex(4)}-{index}.bin").write_bytes(os.urandom(1024 * 1024))


BDI_SETTINGS = ("max_ratio", "strict_limit")  # max_bytes is max_ratio's other face


def bdi_limit(workspace: Path, megabytes: int) -> tuple[str, Callable[[], None]]:
    """Cap the dirty pages of the workspace's block device (the loop device) at `megabytes`,
    writers throttled at the cap (strict_limit); the bdi's settings, for the output, and what
    puts them back. A loop device keeps them after it is detached, so every later image on
    that device (a test's, the agent's) would be throttled too: the caller must restore."""
    device = os.stat(workspace).st_dev
    bdi = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}")
    saved = {name: (bdi / name).read_text().strip() for name in BDI_SETTINGS}

    def restore() -> None:
        for name, value in saved.items():
            (bdi / name).write_text(value)

    (bdi / "max_bytes").write_text(str(megabytes * 1024 * 1024))
    (bdi / "strict_limit").write_text("1")
    return (f"{bdi}: max_bytes {(bdi / 'max_bytes').read_text().strip()}, "
            f"strict_limit {(bdi / 'strict_limit').read_text().strip()}"), restore


def machine_dirty_mb() -> float:
    """The machine's written data not yet on its disks (page cache Dirty + Writeback), MB."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0]) * 1024
    return (values["Dirty"] + values["Writeback"]) / 1e6


def settle(limit_mb: float, timeout: float = 60.0, plateau: float = 5.0) -> float:
    """Wait until the machine's unwritten data is at most `limit_mb`, or has not fallen for
    `plateau` seconds (what stays dirty on an idle machine), at most `timeout`; the kernel
    writes it back on its own, nothing is forced. The seconds waited."""
    start = time.monotonic()
    lowest, since = machine_dirty_mb(), start
    while lowest > limit_mb and time.monotonic() - start < timeout:
        time.sleep(0.2)
        if (now := machine_dirty_mb()) < lowest - 1:
            lowest, since = now, time.monotonic()
        elif time.monotonic() - since >= plateau:
            break
    return time.monotonic() - start


def row(label: str, values: list[float], note: str = "") -> None:
    ms = [value * 1000 for value in values]
    print(f"{label:<48} p50 {statistics.median(ms):8.0f} ms   max {max(ms):8.0f} ms   "
          f"n={len(ms)} {note}", flush=True)


def baselines(workspace: Path, scratch: Path) -> None:
    from weldr_agent import runner

    copy = scratch / "cp-a"
    took = seconds(lambda: runner.run(["cp", "-a", str(workspace), str(copy)], timeout=1800))
    print(f"{'baseline: cp -a of the tree (to the local disk)':<48} {took:8.2f} s")
    shutil.rmtree(copy)
    (workspace / "src" / "pkg0" / "mod0.ts").write_text("changed\n")
    (workspace / "untracked.txt").write_text("new\n")
    os.chown(workspace / "untracked.txt", 1000, 1000)
    stash = seconds(lambda: runner.run([*GIT, "stash", "-u", "-q"], cwd=workspace, timeout=600))
    pop = seconds(lambda: runner.run([*GIT, "stash", "pop", "-q"], cwd=workspace, timeout=600))
    print(f"{'baseline: git stash -u / pop (tracked+untracked)':<48} {stash:8.2f} s / "
          f"{pop:.2f} s  (node_modules ignored: not saved)")
    worktree = scratch / "worktree"
    os.chown(scratch, 1000, 1000)
    add = seconds(lambda: runner.run([*GIT, "worktree", "add", "-q", str(worktree)],
                                     cwd=workspace, timeout=600))
    print(f"{'baseline: git worktree add (tracked files only)':<48} {add:8.2f} s")
    runner.run([*GIT, "worktree", "remove", "--force", str(worktree)], cwd=workspace,
               timeout=600)


def lose_the_machine(bucket: str) -> None:
    """SIGKILL the daemons, drop the mounts, delete every local file of the bucket."""
    from django.conf import settings

    from mounts import steps, system
    from mounts.models import Mount, Snapshot
    from weldr_agent import runner

    p = system.paths(bucket, system.IMAGE)
    for pid in steps.daemons(p):
        os.kill(pid, signal.SIGKILL)
    runner.wait_until(lambda: not steps.daemons(p), timeout=30)
    steps.umount(p.mount_point, lazy=True)
    runner.wait_until(lambda: not steps.loop_devices(p.image), timeout=30)
    steps.umount(p.volume_dir, lazy=True)
    steps.memory_release(p)
    Mount.objects.filter(bucket=bucket).delete()
    Snapshot.objects.filter(bucket=bucket).delete()
    shutil.rmtree(settings.WELDR_ENV_VOL)
    settings.WELDR_ENV_VOL.mkdir(parents=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npm-copies", type=int, default=14)
    parser.add_argument("--vite-copies", type=int, default=6)
    parser.add_argument("--sources", type=int, default=2000)
    parser.add_argument("--dirty", default="0,10,25,50,100",
                        help="MB of unflushed writes before each snapshot, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bdi-limit-mb", type=int, default=0,
                        help="cap the loop device's dirty data at this many MB (0: the kernel's "
                             "default)")
    parser.add_argument("--settle-mb", type=int, default=0,
                        help="before each write, wait until the machine's unwritten page cache "
                             "(Dirty + Writeback) is at most this many MB or stops falling (0: "
                             "do not wait)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="weldr-bench-snap-"))
    tmp.chmod(0o755)  # the sandbox user runs git in the workspace below it
    server = agent_in_process(tmp, {"WORKSPACE_LAYOUT": "image", "SNAPSHOT_KEEP": "0",
                                    "SNAPSHOT_MAX_AGE_DAYS": "0"})
    from django.conf import settings

    from mounts import services, snapshots, snapshots_forks, steps, system

    bucket = f"bench-{secrets.token_hex(4)}"
    uncap: Callable[[], None] = lambda: None  # noqa: E731
    try:
        mount, _ = services.mount_create(bucket=bucket, layout="image")
        workspace = Path(mount.path)
        files, size = build(workspace, args)
        services.mount_sync(bucket=bucket)
        if args.bdi_limit_mb:
            capped, uncap = bdi_limit(workspace, args.bdi_limit_mb)
            print(f"dirty data capped: {capped}")
        print(f"workspace: {files} files, {size / 1e6:.0f} MB (node_modules: {args.npm_copies}x "
              f"npm, {args.vite_copies}x vite fixture; {args.sources} git-tracked sources); "
              f"UPLOAD_DELAY={settings.UPLOAD_DELAY}, JUICEFS_MEMORY_CGROUP_MB="
              f"{settings.JUICEFS_MEMORY_CGROUP_MB}, S3 {server.endpoint} (rclone, loopback); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        taken = []
        for megabytes in [int(value) for value in args.dirty.split(",")]:
            times, frozen, writes, waited, backlog = [], [], [], [], []
            for _ in range(args.repeat):
                if args.settle_mb:
                    waited.append(settle(args.settle_mb))
                backlog.append(machine_dirty_mb())
                writes.append(seconds(lambda megabytes=megabytes: dirty(workspace, megabytes)))
                start = time.monotonic()
                snap = snapshots.snapshot_create(bucket=bucket, name=f"dirty {megabytes}")
                times.append(time.monotonic() - start)
                frozen.append(snap.frozen_ms / 1000)
                taken.append(snap.snapshot_id)
            if waited:
                row("  waited for the disk before writing", waited)
            print(f"{'  machine unwritten before the write, MB':<48} p50 "
                  f"{statistics.median(backlog):8.0f}      max {max(backlog):8.0f}", flush=True)
            row(f"  writing the {megabytes:>3} MB before it", writes)
            row(f"snapshot, {megabytes:>3} MB unflushed", times)
            row(f"  writers paused (freeze to thaw), {megabytes:>3} MB", frozen)
        restores = [seconds(lambda: snapshots.snapshot_restore(bucket=bucket,
                                                               snapshot_id=taken[0]))
                    for _ in range(args.repeat)]
        row("restore (unmount, clone, mount)", restores)
        assert (workspace / "node_modules" / "npm0" / "package.json").is_file()
        forks = []
        for index in range(min(args.repeat, 3)):
            name = f"{bucket}-f{index}"
            forks.append(seconds(lambda name=name: snapshots_forks.fork_create(
                bucket=bucket, snapshot_id=taken[0], name=name)))
            assert (settings.WORKSPACE_BASE / name / "node_modules" / "npm0").is_dir()
            (settings.WORKSPACE_BASE / name / "written.txt").write_text("writable\n")
            services.mount_remove(bucket=name)
        row("fork to a mounted, writable workspace", forks)
        listing = seconds(lambda: snapshots.snapshot_list(bucket=bucket, sizes=True))
        print(f"{'list ' + str(len(taken)) + ' snapshots with sizes':<48} {listing * 1000:8.0f} ms")
        baselines(workspace, tmp)
        services.mount_sync(bucket=bucket)
        lose_the_machine(bucket)
        start = time.monotonic()
        services.mount_create(bucket=bucket, force=True)
        mounted = time.monotonic() - start
        listed = snapshots.snapshot_list(bucket=bucket)
        listed_at = time.monotonic() - start
        snapshots.snapshot_restore(bucket=bucket, snapshot_id=listed[0].snapshot_id)
        total = time.monotonic() - start
        assert (workspace / "node_modules" / "npm0" / "package.json").is_file()
        print(f"{'new machine: mount (metadata from S3)':<48} {mounted:8.2f} s")
        print(f"{'new machine: + list snapshots':<48} {listed_at:8.2f} s")
        print(f"{'new machine: + restore one (total)':<48} {total:8.2f} s")
    finally:
        uncap()
        try:
            services.mount_remove(bucket=bucket, force=True)
        except Exception as error:  # noqa: BLE001
            print(f"unmount: {error}", file=sys.stderr)
        steps.teardown(system.paths(bucket), juicefs_pid=None, litestream_pid=None, grace=5)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
