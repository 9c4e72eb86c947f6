#!/usr/bin/env python3
"""The coding-workload benchmark of the workspace storage paths (issues 3 and 7).

One run starts its own S3 server (`rclone serve s3` on a free loopback port), then, on each
target, unpacks a real source tree, runs `git init && git add -A && git commit`, `git status`,
stats every file and removes the tree. It prints each step's median time and its ratio to a
journaled ext4 on a loop device (the baseline: the machine's root ext4 has no journal and
avoids reusing freed inodes after `rm -rf`, which slows the next unpack several-fold).

Everything it mounts, attaches or starts is undone on exit, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as lib  # noqa: E402
from benchlib import runner  # noqa: E402

STEPS = ("untar", "git add+commit", "git status", "stat all", "rm -rf")
DEFAULT_TREE = Path(sys.prefix) / "lib" / "python3.11" / "site-packages" / "django"

# A target builds its working directory inside the stack and returns it (and, for JuiceFS,
# the volume, whose counters explain the time).
Setup = Callable[[lib.Cleanup, lib.LocalS3Server, Path], "Prepared"]


@dataclass
class Prepared:
    workdir: Path
    volume: lib.JuiceFS | None = None
    note: str = ""
    trim: Path | None = None
    bucket: str = ""  # a mount of the mounts app


@dataclass
class Result:
    name: str
    times: dict[str, list[float]] = field(default_factory=dict)
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    note: str = ""
    accesslog: dict[str, tuple[int, float]] = field(default_factory=dict)


def jfs(name: str, *, meta: str = "sqlite", dsn: str = "_journal=WAL",
        format_args: tuple[str, ...] = (), mount_args: tuple[str, ...] = (),
        ext4_image: bool = False) -> Setup:
    def setup(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
        volume = lib.JuiceFS(name=name, s3=s3, root=root, meta=meta, dsn=dsn,
                             format_args=format_args, mount_args=mount_args)
        mountpoint = volume.start(stack)
        note = f"cold format+mount {volume.cold_mount_s:.1f}s"
        if ext4_image:
            started = time.monotonic()
            inner = lib.loop_ext4(stack, image=mountpoint / "workspace.ext4",
                                  mountpoint=root / "ext4", size="4G")
            note += f", image create+mkfs+mount {time.monotonic() - started:.1f}s"
            # The volume's counters still tell what the image's block I/O costs.
            return Prepared(inner, volume, note, trim=inner)
        return Prepared(mountpoint, volume, note)
    return setup


_agent: dict[str, Path] = {}


def _mounts_app(s3: lib.LocalS3Server, base: Path):  # type: ignore[no-untyped-def]
    """The mounts app in this process (Django set up once, its dirs under `base`), on the
    benchmark's S3 server, with the production defaults (UPLOAD_DELAY 5m, writeback, …)."""
    if not _agent:
        os.environ.update({
            "DJANGO_SETTINGS_MODULE": "weldr_agent.settings",
            "WELDR_ENV_VOL": str(base / "env"), "WORKSPACE_BASE": str(base / "ws"),
            "WELDR_RUNTIME_DIR": str(base / "run"), "S3_ENDPOINT": s3.endpoint,
            "S3_ACCESS_KEY_ID": lib.KEY_ID, "S3_SECRET_ACCESS_KEY": lib.SECRET,
            "LOG_LEVEL": "WARNING",
        })
        os.environ.pop("DATABASE_URL", None)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        settings.WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)
        call_command("migrate", database="default", verbosity=0)
        _agent["base"] = base
    from mounts import services, steps, system

    return services, steps, system


def daemons_memory(bucket: str) -> str:
    """RSS and PSS of this mount's juicefs (watchdog + server) and litestream."""
    from bench_mounts import rss_mb

    from mounts import steps, system

    p = system.paths(bucket)
    figures = []
    for kind in (system.JUICEFS, system.LITESTREAM):
        pids = steps.daemons(p, kind)
        rss = sum(rss_mb(pid) for pid in pids)
        pss = sum(rss_mb(pid, "Pss") for pid in pids)
        figures.append(f"{kind} RSS {rss:.0f} MB (PSS {pss:.0f})")
    return ", ".join(figures)


def system_paths_image(bucket: str) -> Path:
    from mounts import system

    return system.paths(bucket, system.IMAGE).image


def weldr(layout: str, *, direct_io: bool = False) -> Setup:
    """The mounts app's own mount (services.mount_create), as POST /mounts makes it."""
    def setup(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
        services, steps, system = _mounts_app(s3, root.parent / "weldr-agent")
        from django.conf import settings

        settings.WORKSPACE_IMAGE_DIRECT_IO = direct_io
        bucket = f"bench-{root.name}".lower().replace("_", "-")

        def remove() -> None:
            try:
                services.mount_remove(bucket=bucket, force=True)
            finally:
                steps.teardown(system.paths(bucket), juicefs_pid=None, litestream_pid=None)

        stack.callback(lib.quietly(remove, f"mount {bucket}"))
        with lib.timed() as cold:
            mount, _ = services.mount_create(bucket=bucket, layout=layout)
        with lib.timed() as unmount:
            services.mount_remove(bucket=bucket)
        with lib.timed() as remount:
            mount, _ = services.mount_create(bucket=bucket, layout=layout)
        note = (f"mounts app, layout {mount.layout}, loop direct-io {direct_io}: cold mount "
                f"(create bucket, format, image) {cold[0]:.1f}s, unmount {unmount[0]:.1f}s, "
                f"remount {remount[0]:.1f}s")
        workdir = Path(mount.path) / "bench"
        workdir.mkdir()
        return Prepared(workdir, note=note, trim=Path(mount.path) if layout == "image" else None,
                        bucket=bucket)
    return setup


def ext4_baseline(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
    root.mkdir(parents=True)
    return Prepared(lib.loop_ext4(stack, image=root / "ext4.img", mountpoint=root / "mnt"),
                    note="journaled ext4 on a loop image on the root disk")


def root_disk(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
    root.mkdir(parents=True)
    return Prepared(root, note="the root ext4 (no journal): not the baseline")


def tmpfs(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
    path = Path("/dev/shm") / f"weldr-bench-{os.getpid()}-tmpfs"
    path.mkdir()
    stack.callback(lib.quietly(lambda: runner.run(["rm", "-rf", str(path)], timeout=300),
                               str(path)))
    return Prepared(path)


def rclone(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
    return Prepared(lib.rclone_mount(stack, s3, root, "bench-rclone"),
                    note="rclone mount --vfs-cache-mode writes")


def s3fs(stack: lib.Cleanup, s3: lib.LocalS3Server, root: Path) -> Prepared:
    return Prepared(lib.s3fs_mount(stack, s3, root, "bench-s3fs"), note="s3fs (Debian)")


# The recommended set (docs/performance.md): the design's options with metadata on tmpfs is
# NOT recommended (a crash loses it); these are the ones that measurably helped.
TUNED_MOUNT = (*lib.DESIGN_MOUNT, "--backup-meta", "0", "--negative-entry-cache", "300")

TARGETS: dict[str, tuple[str, Setup]] = {
    "ext4": ("local disk: journaled ext4 (loop image) [baseline]", ext4_baseline),
    "rootfs": ("local disk: root ext4, no journal", root_disk),
    "tmpfs": ("tmpfs", tmpfs),
    "jfs-design": ("JuiceFS, SQLite, design options",
                   jfs("design", dsn=lib.DESIGN_DSN, format_args=tuple(lib.DESIGN_FORMAT),
                       mount_args=tuple(lib.DESIGN_MOUNT))),
    "jfs-default": ("JuiceFS, SQLite, defaults", jfs("default")),
    "jfs-tuned": ("JuiceFS, SQLite, recommended options",
                  jfs("tuned", dsn=lib.DESIGN_DSN, format_args=tuple(lib.DESIGN_FORMAT),
                      mount_args=TUNED_MOUNT)),
    "jfs-shm": ("JuiceFS, SQLite on tmpfs, design options",
                jfs("shm", meta="sqlite-shm", dsn=lib.DESIGN_DSN,
                    format_args=tuple(lib.DESIGN_FORMAT), mount_args=tuple(lib.DESIGN_MOUNT))),
    "jfs-redis": ("JuiceFS, Redis (comparison only), design options",
                  jfs("redis", meta="redis", format_args=tuple(lib.DESIGN_FORMAT),
                      mount_args=tuple(lib.DESIGN_MOUNT))),
    "jfs-ext4img": ("ext4 image file inside JuiceFS (design options)",
                    jfs("img", dsn=lib.DESIGN_DSN, format_args=tuple(lib.DESIGN_FORMAT),
                        mount_args=tuple(lib.DESIGN_MOUNT), ext4_image=True)),
    "weldr-image": ("mounts app, layout image (ext4 image in JuiceFS)", weldr("image")),
    "weldr-image-dio": ("mounts app, layout image, loop --direct-io=on",
                        weldr("image", direct_io=True)),
    "weldr-files": ("mounts app, layout files (JuiceFS)", weldr("files")),
    "rclone": ("rclone mount --vfs-cache-mode writes", rclone),
    "s3fs": ("s3fs (Debian)", s3fs),
}
DEFAULT_TARGETS = ("ext4", "jfs-design", "jfs-default", "jfs-ext4img", "rclone", "s3fs")


def stat_all(path: Path) -> int:
    count = 0
    for directory, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lstat(os.path.join(directory, name))
            count += 1
    return count


def workload(tarball: Path, workdir: Path,
             git_env: dict[str, str]) -> dict[str, Callable[[], object]]:
    tree = workdir / "tree"
    git = ["git", "-c", "core.fsmonitor=false", "-c", "gc.auto=0"]
    return {
        "untar": lambda: runner.run(["tar", "xf", str(tarball), "-C", str(workdir)],
                                    timeout=1800),
        "git add+commit": lambda: (
            runner.run([*git, "init", "-q"], cwd=tree, env=git_env, timeout=600),
            runner.run([*git, "add", "-A"], cwd=tree, env=git_env, timeout=1800),
            runner.run([*git, "commit", "-q", "-m", "bench"], cwd=tree, env=git_env,
                       timeout=1800)),
        "git status": lambda: runner.run([*git, "status", "--porcelain"], cwd=tree,
                                         env=git_env, timeout=1800),
        "stat all": lambda: stat_all(tree),
        "rm -rf": lambda: runner.run(["rm", "-rf", str(tree)], timeout=1800),
    }


class AccessLog:
    """Reads a JuiceFS .accesslog while a step runs and sums the latency per FUSE operation."""

    def __init__(self, mountpoint: Path) -> None:
        self.handle = open(mountpoint / ".accesslog", "rb", buffering=0)  # noqa: SIM115
        self.ops: dict[str, tuple[int, float]] = {}
        self.stopping = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pending = b""
        while not self.stopping:
            chunk = self.handle.read(1 << 16)
            if not chunk:
                time.sleep(0.05)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                match = lib.ACCESSLOG_LINE.search(line.decode(errors="replace"))
                if match:
                    count, total = self.ops.get(match[1], (0, 0.0))
                    self.ops[match[1]] = (count + 1, total + float(match[2]))

    def close(self) -> dict[str, tuple[int, float]]:
        time.sleep(1.0)  # let the log catch up
        self.stopping = True
        self.thread.join(timeout=5)
        self.handle.close()
        return self.ops


def prepare(key: str, setup: Setup, stack: lib.Cleanup, s3: lib.LocalS3Server,
            base: Path) -> tuple[Result, Prepared | None]:
    result = Result(key)
    try:
        prepared = setup(stack, s3, base / key)
    except (lib.Unavailable, runner.CommandError) as error:
        result.error = f"could not mount: {error}"
        lib.log(f"{key}: {result.error}")
        return result, None
    result.note = prepared.note
    return result, prepared


def run_once(result: Result, prepared: Prepared, run: int, runs: int, tarball: Path,
             accesslog: bool, git_env: dict[str, str]) -> None:
    """One pass of the workload on one target; a failing step ends the target for good."""
    workdir = prepared.workdir / f"run{run}"
    workdir.mkdir()
    volume = prepared.volume
    for step, action in workload(tarball, workdir, git_env).items():
        before = volume.counters() if volume else None
        log_reader = (AccessLog(volume.mountpoint)
                      if accesslog and volume and step == "untar" and not result.accesslog
                      else None)
        try:
            with lib.timed() as elapsed:
                action()
        except (runner.CommandError, OSError) as error:
            result.error = f"{step} failed: {str(error)[:300]}"
            lib.log(f"{result.name}: {result.error}")
            return
        finally:
            if log_reader is not None:
                result.accesslog = log_reader.close()
        result.times.setdefault(step, []).append(elapsed[0])
        if before is not None and volume is not None and step not in result.counters:
            after = volume.counters()
            result.counters[step] = {k: after[k] - before[k] for k in after}
        lib.log(f"{result.name} run {run + 1}/{runs}: {step} {elapsed[0]:.2f}s")
    workdir.rmdir()


def finish(result: Result, prepared: Prepared, s3: lib.LocalS3Server) -> None:
    """What the runs left behind: space reclaimed by fstrim, bucket size, RSS, staging."""
    volume = prepared.volume
    if prepared.trim is not None and not result.error:
        # Deleted files inside the image only free S3 space if ext4 discards them and
        # JuiceFS turns the loop device's discards into holes in the image file.
        before = volume.counters()["used_space"] if volume else 0.0
        trim = runner.run(["fstrim", "-v", str(prepared.trim)], timeout=600, check=False)
        after = volume.counters()["used_space"] if volume else 0.0
        result.note += (f"; fstrim: {(trim.stdout or trim.stderr).strip()[-80:]}, volume "
                        f"used space {before / 2**20:.0f} -> {after / 2**20:.0f} MB")
    if prepared.bucket:
        from mounts import services

        result.note += f"; {daemons_memory(prepared.bucket)} after the runs"
        image = system_paths_image(prepared.bucket)
        if image.exists():
            # The image's pages in the page cache: the second copy of the workspace's data
            # that a loop device without direct I/O keeps (ext4's own pages are the first).
            cached = runner.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                                 str(image)], timeout=60, check=False).stdout.strip()
            result.note += f"; image file in page cache {int(cached or 0) / 2**20:.0f} MB"
        with lib.timed() as synced:
            services.mount_sync(bucket=prepared.bucket)
        objects, size_mb = lib.bucket_usage(s3, prepared.bucket)
        result.note += (f"; zero-RPO sync after the runs {synced[0]:.1f}s; bucket {objects} "
                        f"objects, {size_mb:.0f} MB")
    if volume is not None:
        objects, size_mb = lib.bucket_usage(s3, f"jfs-{volume.name}")
        c = volume.counters()
        result.note += (f"; bucket {objects} objects, {size_mb:.0f} MB; juicefs RSS "
                        f"{c['rss_bytes'] / 2**20:.0f} MB, {c['staged_blocks']:.0f} blocks "
                        f"({c['staged_bytes'] / 2**20:.0f} MB) still staged, "
                        f"{c['uploaded_bytes'] / 2**20:.0f} MB uploaded")


def print_table(results: list[Result], labels: dict[str, str], baseline: str) -> None:
    base = results[0] if results and results[0].name == baseline else None
    header = "| target | " + " | ".join(STEPS) + " | total |"
    print(header)
    print("|" + "---|" * (len(STEPS) + 2))
    for result in results:
        if result.error and not result.times:
            print(f"| {labels[result.name]} | " + " | ".join("-" for _ in STEPS)
                  + f" | {result.error[:160]} |")
            continue
        cells, total, base_total = [], 0.0, 0.0
        for step in STEPS:
            value = lib.median(result.times.get(step, []))
            total += value
            cell = lib.fmt_seconds(value)
            if base is not None and result is not base and step in base.times:
                reference = lib.median(base.times[step])
                base_total += reference
                cell += f" ({value / reference:.0f}×)" if value / reference >= 10 else \
                    f" ({value / reference:.1f}×)"
            cells.append(cell)
        total_cell = lib.fmt_seconds(total)
        if base_total:
            total_cell += f" ({total / base_total:.1f}×)"
        suffix = f" — {result.error}" if result.error else ""
        print(f"| {labels[result.name]} | " + " | ".join(cells) + f" | {total_cell}{suffix} |")


def print_counters(results: list[Result]) -> None:
    for result in results:
        if not result.counters:
            continue
        print(f"\n{result.name}: JuiceFS counters per step (first run)")
        print("| step | FUSE ops | FUSE latency sum s | meta txns | txn s | restarts "
              "| S3 requests | MB written | juicefs CPU s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for step, c in result.counters.items():
            print(f"| {step} | {c['fuse_ops']:.0f} | {c['fuse_s']:.1f} | {c['meta_txn']:.0f} | "
                  f"{c['meta_txn_s']:.1f} | {c['txn_restarts']:.0f} | {c['s3_requests']:.0f} | "
                  f"{c['written_bytes'] / 2**20:.1f} | {c['cpu_s']:.1f} |")
        if result.accesslog:
            print(f"\n{result.name}: untar per FUSE operation (.accesslog, first run)")
            print("| op | count | latency sum s |")
            print("|---|---|---|")
            for op, (count, total) in sorted(result.accesslog.items(),
                                             key=lambda item: -item[1][1]):
                print(f"| {op} | {count} | {total:.2f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="targets: " + ", ".join(f"{k} ({v[0]})" for k, v in TARGETS.items()))
    parser.add_argument("--runs", type=int, default=1,
                        help="runs per target; the table shows medians (default 1)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated targets; the first is the ratio baseline "
                             f"(default {','.join(DEFAULT_TARGETS)})")
    parser.add_argument("--tree", type=Path, default=DEFAULT_TREE,
                        help="source tree to unpack (default: the installed Django package)")
    parser.add_argument("--accesslog", action="store_true",
                        help="sum JuiceFS .accesslog latencies per FUSE op during the 1st untar")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=OPTIONS",
                        help="add a target 'v-NAME': JuiceFS with the design options plus "
                             "OPTIONS (juicefs mount flags); repeatable, for option sweeps")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to put images, caches and metadata (default: a temp dir)")
    args = parser.parse_args(argv)
    for variant in args.variant:
        name, sep, options = variant.partition("=")
        if not sep or not name.isidentifier():
            parser.error(f"--variant {variant!r}: expected NAME=OPTIONS")
        TARGETS[f"v-{name}"] = (
            f"JuiceFS design + {options}",
            jfs(f"v-{name}".replace("_", "-").lower(), dsn=lib.DESIGN_DSN,
                format_args=tuple(lib.DESIGN_FORMAT),
                mount_args=(*lib.DESIGN_MOUNT, *shlex.split(options))))
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not args.tree.is_dir():
        parser.error(f"--tree {args.tree} is not a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_workspace: needs root (FUSE and loop devices)", file=sys.stderr)
        return 2
    results: list[Result] = []
    with lib.Cleanup() as stack:
        base = Path(tempfile.mkdtemp(prefix="weldr-bench-", dir=args.workdir))
        stack.callback(lib.quietly(lambda: runner.run(["rm", "-rf", str(base)], timeout=600),
                                   str(base)))
        tarball = base / "tree.tar"
        files = lib.make_tarball(args.tree, tarball)
        lib.log(f"workload: {args.tree} ({files} files, {tarball.stat().st_size >> 20} MiB tar)")
        s3 = lib.start_s3(stack, base)
        home = base / "home"
        home.mkdir()
        git_env = runner.clean_env({**lib.GIT_ENV, "HOME": str(home)})
        load_before = lib.machine_note()
        # All targets stay mounted and the runs go round them in turn, so that every run's
        # ratios compare figures taken minutes apart on a machine whose load keeps changing.
        prepared: dict[str, Prepared | None] = {}
        for key in args.targets:
            lib.log(f"== {key}: {TARGETS[key][0]}")
            result, prepared[key] = prepare(key, TARGETS[key][1], stack, s3, base)
            results.append(result)
        for run in range(args.runs):
            for result in results:
                ready = prepared[result.name]
                if ready is not None and not result.error:
                    run_once(result, ready, run, args.runs, tarball, args.accesslog, git_env)
        for result in results:
            ready = prepared[result.name]
            if ready is not None:
                finish(result, ready, s3)
        print(f"\nWorkload: {files} files from {args.tree}; medians of {args.runs} run(s); "
              f"seconds (ratio to {args.targets[0]}).")
        print(f"Machine: before {load_before}; after {lib.machine_note()}.\n")
        labels = {k: v[0] for k, v in TARGETS.items()}
        print_table(results, labels, args.targets[0])
        notes = [f"- {labels[r.name]}: {r.note}" for r in results if r.note]
        if notes:
            print("\n" + "\n".join(notes))
        print_counters(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
