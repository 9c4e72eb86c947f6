#!/usr/bin/env python3
"""Mount, remount and cold-restore costs of a workspace: JuiceFS files vs an ext4 image in JuiceFS.

For each layout: format a new volume and mount it (cold mount), write a --files source tree and
commit it with git, make it durable in S3 (for the image: unmount the ext4 and wait until
JuiceFS has uploaded every staged block), unmount, then mount again with an EMPTY cache folder
(what a new machine sees once the metadata database is back) and time `git status` and reading
every file, all served from S3. Uses --upload-delay 0 so that "durable" is measurable; the
other options are the design's. Everything mounted or started is undone on exit and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as lib  # noqa: E402
from bench_branchdir import build_tree  # noqa: E402
from benchlib import runner  # noqa: E402

STEPS = ("cold format+mount", "write tree + git commit", "flush to S3", "unmount",
         "remount, empty cache", "git status (cold)", "read all files (cold)",
         "git status (warm)")


def mount_args() -> tuple[str, ...]:
    args = list(lib.DESIGN_MOUNT)
    args[args.index("--upload-delay") + 1] = "0s"
    return tuple(args)


def wait_uploaded(volume: lib.JuiceFS, timeout: float = 1800) -> None:
    def done() -> bool:
        c = volume.counters()
        return c["staged_blocks"] == 0 and c["staged_bytes"] == 0
    if not runner.wait_until(done, timeout=timeout, interval=0.5):
        raise RuntimeError("staged blocks were not uploaded in time")


def layout(image: bool, s3: lib.LocalS3Server, base: Path, tarball: Path,
           git_env: dict[str, str]) -> tuple[dict[str, float], str]:
    name = "rimage" if image else "rnative"
    times: dict[str, float] = {}
    with lib.Cleanup() as stack:
        volume = lib.JuiceFS(name=name, s3=s3, root=base / name, dsn=lib.DESIGN_DSN,
                             format_args=tuple(lib.DESIGN_FORMAT), mount_args=mount_args())
        volume.start(stack)
        times["cold format+mount"] = volume.cold_mount_s
        loop = lib.LoopMount(volume.mountpoint / "workspace.ext4", base / name / "ext4")
        if image:
            with lib.timed() as elapsed:
                lib.make_ext4_image(loop.image, "4G")
                loop.open(stack)
            times["cold format+mount"] += elapsed[0]
        workdir = loop.mountpoint if image else volume.mountpoint
        tree = workdir / "tree"
        with lib.timed() as elapsed:
            runner.run(["tar", "xf", str(tarball), "-C", str(workdir)], timeout=3600)
            for argv in (["git", "init", "-q"], ["git", "add", "-A"],
                         ["git", "commit", "-q", "-m", "bench"]):
                runner.run(argv, cwd=tree, env=git_env, timeout=3600)
        times["write tree + git commit"] = elapsed[0]
        with lib.timed() as elapsed:
            if image:
                loop.close()
            # Closing a file hands its data to JuiceFS (syncfs on FUSE is EPERM): what is left
            # is JuiceFS's own staging, uploaded in the background.
            wait_uploaded(volume)
        times["flush to S3"] = elapsed[0]
        written = volume.counters()
        with lib.timed() as elapsed:
            volume.unmount()
        times["unmount"] = elapsed[0]
    objects, size_mb = lib.bucket_usage(s3, f"jfs-{name}")
    with lib.Cleanup() as stack:
        with lib.timed() as elapsed:
            volume.mount(stack, base / name / "cache-new")
            if image:
                loop.open(stack)
        times["remount, empty cache"] = elapsed[0]
        tree = (loop.mountpoint if image else volume.mountpoint) / "tree"
        with lib.timed() as elapsed:
            runner.run(["git", "status", "--porcelain"], cwd=tree, env=git_env, timeout=3600)
        times["git status (cold)"] = elapsed[0]
        with lib.timed() as elapsed:
            runner.run(["tar", "cf", "/dev/null", "."], cwd=tree, timeout=3600)
        times["read all files (cold)"] = elapsed[0]
        with lib.timed() as elapsed:
            runner.run(["git", "status", "--porcelain"], cwd=tree, env=git_env, timeout=3600)
        times["git status (warm)"] = elapsed[0]
        rss = volume.counters()["rss_bytes"] / 2**20
    note = (f"{written['written_bytes'] / 2**20:.0f} MB written through FUSE, "
            f"{written['uploaded_bytes'] / 2**20:.0f} MB uploaded; bucket holds {objects} "
            f"objects, {size_mb:.0f} MB; juicefs RSS after the cold reads {rss:.0f} MB")
    return times, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="tree size (default 10000)")
    parser.add_argument("--layouts", default="native,image",
                        help="native (files in JuiceFS), image (ext4 image in JuiceFS)")
    args = parser.parse_args(argv)
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if not layouts or any(x not in ("native", "image") for x in layouts) or args.files < 1:
        parser.error("--layouts: native and/or image; --files must be positive")
    if os.geteuid() != 0:
        print("bench_restore: needs root (FUSE and loop devices)", file=sys.stderr)
        return 2
    with lib.Cleanup() as stack:
        base = Path(tempfile.mkdtemp(prefix="weldr-bench-restore-"))
        stack.callback(lib.quietly(lambda: runner.run(["rm", "-rf", str(base)], timeout=600),
                                   str(base)))
        source = base / "source"
        files = build_tree(source / "tree", args.files)
        tarball = base / "tree.tar"
        runner.run(["tar", "cf", str(tarball), "-C", str(source), "tree"], timeout=600)
        lib.log(f"tree: {files} files")
        s3 = lib.start_s3(stack, base)
        home = base / "home"
        home.mkdir()
        git_env = runner.clean_env({**lib.GIT_ENV, "HOME": str(home)})
        load_before = lib.machine_note()
        results: dict[str, tuple[dict[str, float], str]] = {}
        for key in layouts:
            lib.log(f"== {key}")
            results[key] = layout(key == "image", s3, base, tarball, git_env)
        print(f"\n{files}-file workspace (+ its .git); one run; seconds. JuiceFS with the design "
              "options but --upload-delay 0s.")
        print(f"Machine: before {load_before}; after {lib.machine_note()}.\n")
        print("| layout | " + " | ".join(STEPS) + " |")
        print("|" + "---|" * (len(STEPS) + 1))
        labels = {"native": "files in JuiceFS", "image": "ext4 image in JuiceFS"}
        for key, (times, _) in results.items():
            print(f"| {labels[key]} | " + " | ".join(lib.fmt_seconds(times[s]) for s in STEPS)
                  + " |")
        print()
        for key, (_, note) in results.items():
            print(f"- {labels[key]}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
