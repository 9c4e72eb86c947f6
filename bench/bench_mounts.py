"""Mount-path timings and memory, printed (not asserted).

Prints: cold mount time (new bucket), remount time (local metadata kept), restore-and-mount time
for a workspace of N files (everything local deleted, metadata restored from S3), the
zero-RPO sync time, and the RSS of JuiceFS + Litestream per mount, for one mount and for
MAX_MOUNTS mounts at once, next to the agent's own RSS and a 1 GB machine.

The remount of a known bucket (issue 17: ≤ 0.5 s) is timed --remounts times after a clean
unmount, through `services.mount_create` as POST /mounts runs it, each step timestamped; the
figure (BENCH-RESULT `remount_known_bucket`) is the median on an S3 server that honours
conditional writes, where the lease needs no settle time (`rclone serve s3` does not: its
remounts also wait MOUNT_LEASE_SETTLE_SECONDS, printed beside). Baseline from the same run: the
same volume mounted by hand — `juicefs mount` until it answers, `losetup` and `mount` of the
image — the floor of any remount that starts the daemons.

Runs against its own `rclone serve s3` on a free loopback port, in a temporary directory.
Usage: .venv/bin/python bench/bench_mounts.py [--files 10000] [--mounts 5] [--layout image]
       [--remounts 5]
"""

from __future__ import annotations

import argparse
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

from bench.remount import remount_figures  # noqa: E402


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS/VmHWM from status, or Pss (shared pages split between sharers) from smaps_rollup.

    Pss is the honest per-process figure: the juicefs binary's pages are shared by the
    watchdog, the server and every other mount.
    """
    source = f"/proc/{pid}/smaps_rollup" if field == "Pss" else f"/proc/{pid}/status"
    try:
        for line in Path(source).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_files(root: Path, count: int) -> None:
    for index in range(count):
        folder = root / f"pkg{index % 50}" / f"mod{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index}.ts").write_bytes(
            f"export const v{index} = {index};\n".encode() * (1 + index % 40))


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def timed(label: str, fn, results: dict[str, float]):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    value = fn()
    results[label] = time.monotonic() - start
    print(f"{label:<44} {results[label]:8.2f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mounts", type=int, default=5)
    parser.add_argument("--workload-files", type=int, default=2000,
                        help="files written on each mount before measuring RSS")
    parser.add_argument("--layout", choices=["files", "image"], default="image",
                        help="workspace layout of the volumes (WORKSPACE_LAYOUT)")
    parser.add_argument("--remounts", type=int, default=5,
                        help="timed remounts of a known bucket (median reported)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="weldr-bench-mounts-"))
    server = agent_in_process(tmp, {"WORKSPACE_LAYOUT": args.layout})
    from django.conf import settings

    from mounts import services, steps, system

    results: dict[str, float] = {}
    made: list[str] = []

    def bucket() -> str:
        made.append(f"bench-{secrets.token_hex(4)}")
        return made[-1]

    try:
        print(f"Layout {args.layout}; JuiceFS options: UPLOAD_DELAY={settings.UPLOAD_DELAY} "
              f"WRITEBACK={settings.WRITEBACK_ENABLED} S3={server.endpoint} (rclone, loopback)")
        name = bucket()
        mount, _ = timed("cold mount (new bucket)", lambda: services.mount_create(bucket=name),
                         results)
        workspace = Path(mount.path)
        timed(f"write {args.files} files", lambda: write_files(workspace, args.files), results)
        timed("zero-RPO sync (POST /mounts/{b}/sync)",
              lambda: services.mount_sync(bucket=name), results)
        timed("unmount (flush + final sync)", lambda: services.mount_remove(bucket=name),
              results)
        timed("remount (local metadata kept)", lambda: services.mount_create(bucket=name),
              results)
        remount_figures(name, args.remounts)
        services.mount_remove(bucket=name)
        p = system.paths(name)
        shutil.rmtree(p.cache_dir)
        for path in p.meta_db.parent.glob(f"{name}.db*"):
            path.unlink()
        mount, _ = timed(f"restore-and-mount ({args.files} files, local state deleted)",
                         lambda: services.mount_create(bucket=name), results)
        found = timed("walk the restored tree", lambda: count_files(workspace), results)
        print(f"{'files found after restore':<44} {found:8d} (restored={mount.restored})")
        services.mount_remove(bucket=name)

        print(f"\nMemory with {args.mounts} mounts, {args.workload_files} files written on each "
              f"(VmRSS now / VmHWM peak, MB):")
        names = [bucket() for _ in range(args.mounts)]
        total = peak_total = 0.0
        for index, each in enumerate(names, 1):
            mount, _ = services.mount_create(bucket=each)
            write_files(Path(mount.path), args.workload_files)
            p = system.paths(each)
            juicefs = steps.daemons(p, system.JUICEFS)
            litestream = steps.daemons(p, system.LITESTREAM)
            print(f"  mount {index}: buffer {mount.buffer_size_mb} MB, cache "
                  f"{mount.cache_size_mb} MB; juicefs {sum(rss_mb(x) for x in juicefs):6.1f} "
                  f"[{' + '.join(f'{rss_mb(x):.0f}' for x in juicefs)}] "
                  f"(peak {sum(rss_mb(x, 'VmHWM') for x in juicefs):6.1f}), litestream "
                  f"{sum(rss_mb(x) for x in litestream):5.1f} (peak "
                  f"{sum(rss_mb(x, 'VmHWM') for x in litestream):5.1f})")
        pss_total = 0.0
        for each in names:
            p = system.paths(each)
            pids = steps.daemons(p)
            total += sum(rss_mb(pid) for pid in pids)
            peak_total += sum(rss_mb(pid, "VmHWM") for pid in pids)
            pss_total += sum(rss_mb(pid, "Pss") for pid in pids)
        agent = rss_mb(os.getpid())
        agent_pss = rss_mb(os.getpid(), "Pss")
        print(f"  all {args.mounts} mounts now: RSS {total:7.1f} MB (sum of peaks "
              f"{peak_total:7.1f}); PSS {pss_total:7.1f} MB (shared binary pages counted once)")
        print(f"  this process (Django + the mounts code, an agent stand-in): {agent:6.1f} MB")
        print(f"  mounts + agent: RSS {total + agent:7.1f} MB now, {peak_total + agent:7.1f} MB "
              f"at peaks; PSS {pss_total + agent_pss:7.1f} MB; of a 1024 MB machine")
    finally:
        for each in made:
            try:
                services.mount_remove(bucket=each, force=True)
            except Exception:
                steps.teardown(system.paths(each), juicefs_pid=None, litestream_pid=None)
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
