#!/usr/bin/env python3
"""Bucket footprint of a workspace over a simulated week of edit sessions, both layouts.

For each configuration (`--runs`, `layout:variant[:snapshots]`), a child process runs the
agent's own mount services in-process against its own `rclone serve s3` on a free loopback
port (like bench_snapshots.py), with the production JuiceFS options (writeback,
UPLOAD_DELAY=5m) and the variant's format settings:

- `current`: the settings before issue 17's bucket work (no compression, 4 MiB blocks,
  7 trash days);
- `chosen`: the agent's defaults now.

The workload, as in issue 17: 2,000 source files (~40 KB each, cut from the Python sources of
this virtualenv: real code, compressible like code) committed to git, then `--sessions` edit
sessions — rewrite 200 files, delete 50, add 50, `git add -A && git commit`, then the zero-RPO
sync (`POST /mounts/{bucket}/sync`); with `:snapshots` (image layout) a snapshot after each.
The edits and git run as the sandbox user (uid 1000), never as root.

Printed per session: bytes the workload wrote (the files' bytes + the growth of `.git`), what
each layer passed on (ext4 → the image file, JuiceFS's FUSE writes, its uploads, its
compaction), the bucket's size (every object's size, listed through the S3 API) and the live
data (the workspace's file sizes). Then the "week is over" step: the trash window has passed
for everything the sessions did. JuiceFS's trash is measured in days on the wall clock (Go reads
the real-time clock, which neither a time namespace nor libfaketime moves), so it is simulated
with JuiceFS's own clean-up: the volume is unmounted, its trash days set to 0 (`juicefs
config`), and `juicefs gc --delete` removes what the trash holds (expired files and delayed
slices: every one of them, since all are older than the new edge), pass after pass until a
pass frees nothing more (one pass leaves many released slices pending, as the mount's hourly
clean-up would take them on its next rounds) — then the trash days are set back, the local
cache is deleted and the volume is mounted again from S3 alone and checked (`git fsck --full`,
the same HEAD).

Usage: .venv/bin/python bench/bench_bucket.py [--sessions 10] [--files 2000]
       [--runs image:current,image:chosen,image:chosen:snapshots,files:current,files:chosen]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchlib import agent_in_process  # noqa: E402

from bench.results import report  # noqa: E402

# The format settings of a variant (environment of the child process).
VARIANTS = {
    "current": {"JUICEFS_COMPRESSION": "none", "JUICEFS_BLOCK_SIZE_KB": "4096",
                "TRASH_DAYS": "7"},
    "chosen": {},
    # Candidates beside `chosen` (docs/performance.md, "Bucket footprint").
    "zstd-1m": {"JUICEFS_BLOCK_SIZE_KB": "1024"},
    "zstd-7d": {"TRASH_DAYS": "7"},
}
# git as the sandbox user (uid 1000, who owns the tree), never as root: a repository's hooks and
# config run with the privileges of whoever runs git (docs/security.md).
AS_SANDBOX = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "env", "HOME=/tmp"]
GIT = [*AS_SANDBOX, "git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
       "-c", "gc.auto=0"]
FILE_BYTES = 40_000
GC_PASSES = 30
# The editor: run as uid 1000 by the system python (the agent's venv is not needed).
EDITOR = r'''
import os, random, sys
workspace, corpus_path, seed, count, rewrite, delete, add, size = sys.argv[1:9]
count, rewrite, delete, add, size = map(int, (count, rewrite, delete, add, size))
corpus = open(corpus_path, "rb").read()
rng = random.Random(seed)
def text(name):
    start = rng.randrange(0, len(corpus) - size)
    return (f"# {name} {seed}\n").encode() + corpus[start:start + size]
written = 0
def put(path, data):
    global written
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    written += len(data)
src = os.path.join(workspace, "src")
if count:
    for index in range(count):
        put(os.path.join(src, f"pkg{index % 40}", f"mod{index}.py"), text(index))
else:
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
    rng.shuffle(files)
    for path in files[:rewrite]:
        put(path, text(path))
    for path in files[rewrite:rewrite + delete]:
        os.unlink(path)
    for index in range(add):
        put(os.path.join(src, f"pkg{rng.randrange(40)}", f"new{seed}_{index}.py"), text(index))
print(written)
'''


# ----------------------------------------------------------------------------- measuring


def bucket_bytes(bucket: str) -> dict[str, int]:
    """Every object's size in the bucket, listed through the S3 API with explicit keys, by part:
    JuiceFS's blocks, the Litestream replica, the rest."""
    from django.conf import settings

    from weldr_agent.s3 import _client

    client = _client(settings.S3_ENDPOINT, "us-east-1", settings.S3_ACCESS_KEY_ID,
                     settings.S3_SECRET_ACCESS_KEY)
    parts = {"blocks": 0, "replica": 0, "other": 0, "objects": 0}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            part = "blocks" if "/chunks/" in key else \
                "replica" if key.startswith("weldr-meta/") else "other"
            parts[part] += item["Size"]
            parts["objects"] += 1
    parts["total"] = parts["blocks"] + parts["replica"] + parts["other"]
    return parts


def tree_bytes(path: Path) -> int:
    """The workspace's live data: the sizes of its files (`.git` included)."""
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def ext4_written(mount_point: Path) -> int:
    """Bytes the ext4 on the image has written to its device since it was mounted."""
    device = ""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == str(mount_point) and fields[2] == "ext4":
                device = os.path.basename(fields[0])
    if not device:
        return 0
    return int(Path(f"/sys/fs/ext4/{device}/session_write_kbytes").read_text()) * 1024


def juicefs_counters(volume_point: Path) -> dict[str, float]:
    """JuiceFS's own counters from its .stats: FUSE writes, uploads, compaction."""
    wanted = {
        "juicefs_fuse_written_size_bytes_sum": "fuse_written",
        "juicefs_compact_size_histogram_bytes_sum": "compacted",
        "juicefs_compact_size_histogram_bytes_total": "compactions",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in (volume_point / ".stats").read_text().splitlines():
        key, _, value = line.rpartition(" ")
        if key in wanted:
            found[wanted[key]] += float(value)
    return found


# ----------------------------------------------------------------------------- one configuration


def corpus_make(path: Path) -> None:
    """~24 MB of real source code (this virtualenv's Python files), readable by uid 1000."""
    import site

    chunks, size = [], 0
    for directory in site.getsitepackages():
        for file in sorted(Path(directory).rglob("*.py")):
            data = file.read_bytes()
            chunks.append(data)
            size += len(data)
            if size > 24_000_000:
                break
        if size > 24_000_000:
            break
    path.write_bytes(b"".join(chunks))
    path.chmod(0o644)


def edit(workspace: Path, corpus: Path, editor: Path, seed: str, *, count: int = 0) -> int:
    from weldr_agent import runner

    result = runner.run([*AS_SANDBOX, "/usr/bin/python3", str(editor), str(workspace),
                         str(corpus), seed, str(count), "200", "50", "50", str(FILE_BYTES)],
                        timeout=600)
    return int(result.stdout.strip())


def git(workspace: Path, *args: str) -> str:
    from weldr_agent import runner

    return runner.run([*GIT, *args], cwd=workspace, timeout=1200).stdout


def juicefs_admin(*args: str) -> str:
    from mounts import system
    from weldr_agent import runner

    result = runner.run([runner.tool("juicefs"), *args], env=system.juicefs_env(), timeout=1200)
    return result.stdout + result.stderr


def juicefs_admin_unchecked(*args: str) -> str:
    from mounts import system
    from weldr_agent import runner

    result = runner.run([runner.tool("juicefs"), *args], env=system.juicefs_env(), timeout=1200,
                        check=False)
    return result.stdout + result.stderr


def trash_window_pass(bucket: str, layout: str) -> str:
    """Unmounted: what the trash holds is deleted as if its days had passed (see the docstring
    of this file); the volume's trash days are set back afterwards. JuiceFS's own report."""
    from django.conf import settings

    from mounts import system

    p = system.paths(bucket, layout)
    juicefs_admin("config", p.meta_url, "--trash-days", "0", "--yes")
    # Until a pass frees nothing more: a pass releases the trash's slices but leaves many of
    # them pending (measured: 1,065 slices, 741 MB, left with refs 0 after two passes; a third
    # deleted them) — the mount's hourly clean-up jobs would take them on their next rounds.
    output, size = "", bucket_bytes(bucket)["blocks"]
    for _ in range(GC_PASSES):
        output += juicefs_admin("gc", p.meta_url, "--delete")
        size, before = bucket_bytes(bucket)["blocks"], size
        if size == before:
            break
    juicefs_admin("config", p.meta_url, "--trash-days", str(settings.TRASH_DAYS), "--yes")
    return " | ".join(line.split("]", 1)[-1].strip() for line in output.splitlines()
                      if "scanned" in line or "Cleaned" in line or "Deleted" in line)


def run_one(spec: str, args: argparse.Namespace, tmp: Path) -> dict:
    """One configuration, in this (child) process: the workload and its figures, as a dict."""
    layout, variant, *rest = spec.split(":")
    snapshots_on = "snapshots" in rest
    server = agent_in_process(tmp, {"WORKSPACE_LAYOUT": layout, "SNAPSHOT_KEEP": "0",
                                    "SNAPSHOT_MAX_AGE_DAYS": "0", **VARIANTS[variant]})
    from django.conf import settings

    from mounts import services, snapshots, steps, system

    corpus, editor = tmp / "corpus.txt", tmp / "editor.py"
    corpus_make(corpus)
    editor.write_text(EDITOR)
    editor.chmod(0o644)
    bucket = f"bench-{secrets.token_hex(4)}"
    out: dict = {"spec": spec, "settings": {
        "compression": settings.JUICEFS_COMPRESSION, "block_kb": settings.JUICEFS_BLOCK_SIZE_KB,
        "trash_days": settings.TRASH_DAYS}, "sessions": []}
    try:
        mount, _ = services.mount_create(bucket=bucket, layout=layout)
        # The repository in a folder of its own: with `files` the workspace is JuiceFS's root,
        # whose internal files (.accesslog, .stats, …) git must not try to add.
        workspace = Path(mount.path) / "repo"
        workspace.mkdir()
        p = system.paths(bucket, layout)
        os.chown(workspace, 1000, 1000)
        edit(workspace, corpus, editor, "init", count=args.files)
        git(workspace, "init", "-q")
        git(workspace, "add", "-A")
        git(workspace, "commit", "-qm", "init")
        services.mount_sync(bucket=bucket)
        base = bucket_bytes(bucket)
        out["initial"] = {"bucket": base, "live": tree_bytes(workspace)}
        print(f"[{spec}] initial: live {out['initial']['live'] / 1e6:.1f} MB, bucket "
              f"{base['total'] / 1e6:.1f} MB", file=sys.stderr, flush=True)
        for session in range(args.sessions):
            before = {"git": tree_bytes(workspace / ".git"), "ext4": ext4_written(p.mount_point),
                      **juicefs_counters(p.volume_point)}
            started = time.monotonic()
            files = edit(workspace, corpus, editor, f"s{session}")
            git(workspace, "add", "-A")
            git(workspace, "commit", "-qm", f"session {session}")
            services.mount_sync(bucket=bucket)
            if snapshots_on:
                snapshots.snapshot_create(bucket=bucket, name=f"session {session}")
                services.mount_sync(bucket=bucket)
            after = {"git": tree_bytes(workspace / ".git"), "ext4": ext4_written(p.mount_point),
                     **juicefs_counters(p.volume_point)}
            row = {"files": files, "git": max(0, after["git"] - before["git"]),
                   "seconds": round(time.monotonic() - started, 1),
                   **{k: after[k] - before[k] for k in
                      ("ext4", "fuse_written", "compacted", "compactions")},
                   "bucket": bucket_bytes(bucket), "live": tree_bytes(workspace)}
            out["sessions"].append(row)
            print(f"[{spec}] session {session + 1}: wrote {(files + row['git']) / 1e6:.1f} MB, "
                  f"bucket {row['bucket']['total'] / 1e6:.1f} MB, live {row['live'] / 1e6:.1f} "
                  f"MB ({row['seconds']} s)", file=sys.stderr, flush=True)
        if snapshots_on:
            listed = snapshots.snapshot_list(bucket=bucket, sizes=True)
            out["snapshots_held"] = sum(s.size_bytes or 0 for s in listed)
        digest = hashlib.sha256(git(workspace, "rev-parse", "HEAD").encode()).hexdigest()
        services.mount_remove(bucket=bucket)
        out["unmounted"] = bucket_bytes(bucket)
        out["gc"] = trash_window_pass(bucket, layout)
        out["after_window"] = bucket_bytes(bucket)
        # The volume still works after the clean-up, read from S3 alone (the local cache is
        # dropped): every object git needs is there, and decodes.
        shutil.rmtree(p.cache_dir)
        out["live_end"] = out["sessions"][-1]["live"]
        try:
            mount, _ = services.mount_create(bucket=bucket)
            git(workspace, "fsck", "--full", "--no-progress")
            head = git(workspace, "rev-parse", "HEAD").encode()
            assert hashlib.sha256(head).hexdigest() == digest, "HEAD changed"
            out["live_end"] = tree_bytes(workspace)
            out["verify"] = "ok: mounted from S3 alone, git fsck --full clean, same HEAD"
            services.mount_remove(bucket=bucket)
        except Exception as error:  # noqa: BLE001  (reported, with JuiceFS's own check)
            out["verify"] = f"FAILED: {str(error)[-600:]}"
            fsck = juicefs_admin_unchecked("fsck", p.meta_url)
            out["verify"] += " | juicefs fsck: " + " | ".join(
                line for line in fsck.splitlines() if "missing" in line.lower()
                or "lost" in line.lower() or "broken" in line.lower())[-1500:]
    finally:
        try:
            services.mount_remove(bucket=bucket, force=True)
        except Exception:  # noqa: BLE001  (already unmounted)
            pass
        steps.teardown(system.paths(bucket), juicefs_pid=None, litestream_pid=None, grace=5)
        server.stop()
    return out


# ----------------------------------------------------------------------------- the parent


def mb(value: float) -> str:
    return f"{value / 1e6:7.1f}"


def summarize(result: dict) -> dict[str, float]:
    sessions = result["sessions"]
    written = sum(s["files"] + s["git"] for s in sessions)
    growth = sessions[-1]["bucket"]["total"] - result["initial"]["bucket"]["total"]
    blocks_growth = sessions[-1]["bucket"]["blocks"] - result["initial"]["bucket"]["blocks"]
    return {
        "written": written, "growth": growth,
        "amplification": growth / written, "blocks_amplification": blocks_growth / written,
        "bucket_live_end": sessions[-1]["bucket"]["total"] / sessions[-1]["live"],
        "bucket_live_window": result["after_window"]["total"] / result["live_end"],
        "blocks_live_window": result["after_window"]["blocks"] / result["live_end"],
    }


def print_result(result: dict) -> None:
    spec, conf = result["spec"], result["settings"]
    print(f"\n## {spec}: compression {conf['compression']}, block {conf['block_kb']} KiB, "
          f"trash {conf['trash_days']} days")
    init = result["initial"]
    print(f"initial: live {mb(init['live'])} MB, bucket {mb(init['bucket']['total'])} MB "
          f"(blocks {mb(init['bucket']['blocks']).strip()}, replica "
          f"{mb(init['bucket']['replica']).strip()})")
    print("| session | wrote MB (files+git) | ext4→image MB | JuiceFS FUSE MB | "
          "compacted MB (n) | bucket MB (blocks, replica) | growth ÷ wrote | bucket ÷ live | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    previous = init["bucket"]["total"]
    for index, s in enumerate(result["sessions"], 1):
        wrote = s["files"] + s["git"]
        b = s["bucket"]
        print(f"| {index} | {mb(wrote)} ({mb(s['files']).strip()}+{mb(s['git']).strip()}) "
              f"| {mb(s['ext4'])} | {mb(s['fuse_written'])} "
              f"| {mb(s['compacted'])} ({s['compactions']:.0f}) | {mb(b['total'])} "
              f"({mb(b['blocks']).strip()}, {mb(b['replica']).strip()}) "
              f"| {(b['total'] - previous) / wrote:5.2f}× | {b['total'] / s['live']:5.2f}× "
              f"| {s['seconds']} |")
        previous = b["total"]
    figures = summarize(result)
    after = result["after_window"]
    print(f"after {len(result['sessions'])} sessions: wrote {mb(figures['written'])} MB, bucket "
          f"grew {mb(figures['growth'])} MB = **{figures['amplification']:.2f}×** "
          f"(blocks alone {figures['blocks_amplification']:.2f}×); bucket ÷ live "
          f"{figures['bucket_live_end']:.2f}×")
    if "snapshots_held" in result:
        print(f"snapshots hold {mb(result['snapshots_held'])} MB that nothing else references")
    print(f"after the trash window (juicefs gc --delete, trash days 0): bucket "
          f"{mb(after['total'])} MB (blocks {mb(after['blocks']).strip()}, replica "
          f"{mb(after['replica']).strip()}), live {mb(result['live_end'])} MB = "
          f"**{figures['bucket_live_window']:.2f}×** (blocks alone "
          f"{figures['blocks_live_window']:.2f}×); gc: {result['gc']}")
    print(f"check after the window: {result.get('verify', '-')}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", default="image:current,image:chosen,image:chosen:snapshots,"
                                          "files:current,files:chosen",
                        help="configurations, comma-separated: layout:variant[:snapshots]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tmp = Path(tempfile.mkdtemp(prefix="weldr-bench-bucket-"))
        tmp.chmod(0o755)  # the sandbox user writes the workspace below it
        try:
            Path(args.json).write_text(json.dumps(run_one(args.child, args, tmp)))
        finally:
            if os.environ.get("BENCH_KEEP"):
                print(f"kept {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        return
    from weldr_agent import runner

    print(f"bench_bucket: {args.files} files + git, {args.sessions} edit sessions per "
          f"configuration; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (the "
          "machine is shared)", flush=True)
    results = {}
    for spec in args.runs.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as handle:
            child = runner.popen([sys.executable, __file__, "--child", spec, "--json",
                                  handle.name, "--sessions", str(args.sessions),
                                  "--files", str(args.files)],
                                 env=dict(os.environ), stdout=None, stderr=None)
            if child.wait() != 0:
                print(f"\n## {spec}: failed (exit {child.returncode}); see above", flush=True)
                continue
            results[spec] = json.loads(Path(handle.name).read_text())
        print_result(results[spec])
    report_targets(results)


def report_targets(results: dict[str, dict]) -> None:
    """BENCH-RESULT lines: the chosen settings' figures, the current ones as the baseline."""
    for layout in ("image", "files"):
        chosen, current = results.get(f"{layout}:chosen"), results.get(f"{layout}:current")
        if chosen is None:
            continue
        now = summarize(chosen)
        before = summarize(current) if current else None
        suffix = "" if layout == "image" else "_files"
        report(key=f"bucket_amplification{suffix}",
               what=f"bucket growth ÷ bytes written ({layout} layout)",
               figure=now["amplification"], unit="×", target="≤ 2×",
               met=now["amplification"] <= 2,
               baseline=f"before: {before['amplification']:.2f}×" if before else "")
        report(key=f"bucket_live_after_trash{suffix}",
               what=f"bucket ÷ live data after the trash window ({layout} layout)",
               figure=now["bucket_live_window"], unit="×", target="≤ 1.5×",
               met=now["bucket_live_window"] <= 1.5,
               baseline=f"before: {before['bucket_live_window']:.2f}×" if before else "")


if __name__ == "__main__":
    main()
