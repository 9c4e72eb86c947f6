#!/usr/bin/env python3
"""Branch directories on local disk synced to S3 with rclone (issue 7): what the sync costs.

Builds a tree of --files source files (taken from the installed Python packages), puts it on a
journaled ext4 (a loop image, like the workspace benchmark's baseline) and times, per rclone
flag set: a full `rclone sync` to the local S3 server, a restore into an empty directory, a
sync with nothing changed (what the periodic timer costs) and the incremental sync after
editing --edits files. Everything it mounts or starts is undone on exit and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as lib  # noqa: E402
from benchlib import runner  # noqa: E402

SITE = Path(sys.prefix) / "lib" / "python3.11" / "site-packages"
# rclone compares size + modification time by default; on S3 the mtime lives in per-object
# metadata, so each compared file costs a HEAD request. The other sets avoid that.
FLAG_SETS: dict[str, list[str]] = {
    "defaults": [],
    "parallel": ["--transfers", "32", "--checkers", "32", "--fast-list"],
    "parallel+checksum": ["--transfers", "32", "--checkers", "32", "--fast-list", "--checksum"],
}
STEPS = ("full sync to S3", "restore", "sync, no change", "sync after editing")


def build_tree(dest: Path, files: int) -> int:
    """Copy the first `files` regular files of the installed packages, keeping their paths."""
    copied = 0
    for directory, dirs, names in os.walk(SITE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            source = Path(directory) / name
            if not source.is_file() or source.is_symlink():
                continue
            target = dest / source.relative_to(SITE)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied += 1
            if copied == files:
                return copied
    return copied


def count_files(path: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(path))


def rclone(args: list[str], env: dict[str, str]) -> None:
    runner.run([runner.tool("rclone"), *args, "--log-level", "ERROR"], timeout=3600, env=env)


def bench(flags: list[str], key: str, s3: lib.LocalS3Server, disk: Path, tree: Path,
          edits: int, env: dict[str, str]) -> dict[str, float]:
    remote = f":s3:branches/{key}/code"
    work = disk / f"work-{key}"
    shutil.copytree(tree, work, symlinks=True)
    times: dict[str, float] = {}
    with lib.timed() as elapsed:
        rclone(["sync", str(work), remote, *flags], env)
    times["full sync to S3"] = elapsed[0]
    restored = disk / f"restore-{key}"
    with lib.timed() as elapsed:
        rclone(["sync", remote, str(restored), *flags], env)
    times["restore"] = elapsed[0]
    if count_files(restored) != count_files(work):
        raise RuntimeError(f"{key}: restore has {count_files(restored)} files, "
                           f"expected {count_files(work)}")
    with lib.timed() as elapsed:
        rclone(["sync", str(work), remote, *flags], env)
    times["sync, no change"] = elapsed[0]
    edited = 0
    for directory, _, names in os.walk(work):
        for name in sorted(names)[:1]:
            with open(Path(directory) / name, "a") as handle:
                handle.write("\n# edited by bench_branchdir\n")
            edited += 1
            if edited == edits:
                break
        if edited == edits:
            break
    with lib.timed() as elapsed:
        rclone(["sync", str(work), remote, *flags], env)
    times["sync after editing"] = elapsed[0]
    shutil.rmtree(work)
    shutil.rmtree(restored)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="tree size (default 10000)")
    parser.add_argument("--edits", type=int, default=10, help="files edited (default 10)")
    parser.add_argument("--runs", type=int, default=1, help="runs; medians shown (default 1)")
    parser.add_argument("--flags", default=",".join(FLAG_SETS),
                        help=f"rclone flag sets to time (default {','.join(FLAG_SETS)})")
    args = parser.parse_args(argv)
    sets = [s.strip() for s in args.flags.split(",") if s.strip()]
    if any(s not in FLAG_SETS for s in sets) or not sets:
        parser.error(f"--flags: choose from {', '.join(FLAG_SETS)}")
    if args.files < 1 or args.edits < 0 or args.runs < 1:
        parser.error("--files and --runs must be positive, --edits not negative")
    if os.geteuid() != 0:
        print("bench_branchdir: needs root (loop devices)", file=sys.stderr)
        return 2
    results: dict[str, dict[str, list[float]]] = {s: {} for s in sets}
    with lib.Cleanup() as stack:
        base = Path(tempfile.mkdtemp(prefix="weldr-bench-branchdir-"))
        stack.callback(lib.quietly(lambda: runner.run(["rm", "-rf", str(base)], timeout=600),
                                   str(base)))
        s3 = lib.start_s3(stack, base)
        lib.create_bucket(s3, "branches")
        disk = lib.loop_ext4(stack, image=base / "ext4.img", mountpoint=base / "disk")
        tree = disk / "tree"
        files = build_tree(tree, args.files)
        size_mb = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) / 2**20
        lib.log(f"tree: {files} files, {size_mb:.0f} MB")
        env = lib.rclone_env(s3)
        load_before = lib.machine_note()
        for run in range(args.runs):
            for name in sets:
                times = bench(FLAG_SETS[name], f"{name.replace('+', '-')}-{run}", s3, disk,
                              tree, args.edits, env)
                for step, value in times.items():
                    results[name].setdefault(step, []).append(value)
                lib.log(f"run {run + 1}: {name}: "
                        + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()))
        print(f"\nBranch directory on a journaled ext4 (loop image), {files} files "
              f"({size_mb:.0f} MB), rclone {args.edits} edited files; medians of {args.runs} "
              f"run(s), seconds.")
        print(f"Machine: before {load_before}; after {lib.machine_note()}.\n")
        print("| rclone flags | " + " | ".join(STEPS) + " |")
        print("|" + "---|" * (len(STEPS) + 1))
        for name in sets:
            cells = [lib.fmt_seconds(lib.median(results[name][s])) for s in STEPS]
            flags = " ".join(FLAG_SETS[name]) or "(defaults)"
            print(f"| {name}: `{flags}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
