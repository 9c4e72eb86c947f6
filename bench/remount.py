"""The remount of a known bucket, timed step by step (bench/bench_mounts.py, issue 17).

Each remount follows a clean unmount and goes through `services.mount_create`, as POST /mounts
runs it. The steps are timed by wrapping the functions the mount procedure calls (their module
attributes, restored afterwards), so the figures are those of the real code path. The baseline
of the same run mounts the same volume by hand: `juicefs mount` until it answers, `losetup`,
`mount` of the image — the floor of a remount that starts its daemons.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from types import ModuleType

from bench.results import report

# (module, function): the steps of a remount, in order; a step inside another one is indented.
STEPS = [
    ("mounts.services", "_slot_take"),
    ("mounts.fencing", "lease_take"),
    ("mounts.lease", "_settle_and_verify"),
    ("mounts.steps", "metadata_prepare"),
    ("mounts.steps", "format_secrets_remove"),
    ("mounts.steps", "layout_record_read"),
    ("mounts.steps", "litestream_spawn"),
    ("mounts.steps", "juicefs_spawn"),
    ("mounts.steps", "litestream_ready"),
    ("mounts.steps", "juicefs_ready"),
    ("mounts.steps", "image_mount"),
    ("mounts.steps.image", "image_check"),
]
INNER = {"_settle_and_verify", "image_check"}


@contextlib.contextmanager
def timestamps(spent: dict[str, list[float]]) -> Iterator[None]:
    """Wrap every step of STEPS; each call's duration is appended to spent[name]."""
    import importlib

    saved: list[tuple[ModuleType, str, Callable]] = []

    def wrap(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name].append(time.monotonic() - start)
        return timed

    for module_name, name in STEPS:
        module = importlib.import_module(module_name)
        original = getattr(module, name)
        saved.append((module, name, original))
        setattr(module, name, wrap(name, original))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


def remounts(bucket: str, runs: int) -> tuple[list[float], dict[str, list[float]]]:
    """`runs` unmount → remount cycles; the remounts' totals and their steps' durations."""
    from mounts import services

    totals: list[float] = []
    spent: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        services.mount_remove(bucket=bucket)
        with timestamps(spent):
            start = time.monotonic()
            services.mount_create(bucket=bucket)
            totals.append(time.monotonic() - start)
    return totals, spent


def bare_mount(bucket: str) -> float:
    """Seconds for the same volume mounted by hand: juicefs until it answers, then its image on
    a loop device and mounted; everything undone after (unmounted bucket in, unmounted out)."""
    from mounts import steps, system
    from weldr_agent import runner

    p = system.paths(bucket, system.IMAGE)
    start = time.monotonic()
    process = steps.juicefs_spawn(p, system.budget(1))
    try:
        steps.juicefs_ready(p, process)
        device = runner.run(system.losetup_attach_argv(p.image, direct_io=False),
                            timeout=60).stdout.strip()
        runner.run(system.ext4_mount_argv(device, p.mount_point), timeout=60)
        elapsed = time.monotonic() - start
        steps.loop_detach(device)
    finally:
        steps.image_release(p)
        steps.umount(p.volume_point)
        runner.stop(process, grace=30)
    return elapsed


def remount_figures(bucket: str, runs: int) -> None:
    """Print the remount's steps and report `remount_known_bucket` beside its baseline."""
    from django.conf import settings

    from mounts import services

    services.mount_remove(bucket=bucket)
    floor = statistics.median(bare_mount(bucket) for _ in range(runs))
    # The image was mounted by hand: this agent's record of its clean unmount no longer
    # matches it, so this mount checks it (e2fsck) and the timed ones start from a clean one.
    services.mount_create(bucket=bucket)
    settle = settings.MOUNT_LEASE_SETTLE_SECONDS
    rclone, rclone_steps = remounts(bucket, runs)
    # An S3 server that honours conditional writes (AWS S3, R2, Tigris): no settle time.
    settings.MOUNT_LEASE_SETTLE_SECONDS = 0
    try:
        conditional, steps_spent = remounts(bucket, runs)
    finally:
        settings.MOUNT_LEASE_SETTLE_SECONDS = settle
    print(f"\nRemount of a known bucket after a clean unmount, {runs} runs, median (range) s:")
    for (_module, name) in STEPS:
        for label, spent in (("", steps_spent), (" [rclone]", rclone_steps)):
            if spent.get(name) and (label == "" or name == "_settle_and_verify"):
                indent = "    " if name in INNER else "  "
                print(f"{indent}{name + label:<36} {_spread(spent[name])}")
    print(f"  {'remount, S3 with conditional writes':<36} {_spread(conditional)}")
    print(f"  {'remount, rclone (lease settle)':<36} {_spread(rclone)}")
    print(f"  {'baseline: juicefs + losetup + mount':<36} {floor:.3f}")
    figure = statistics.median(conditional)
    report(key="remount_known_bucket",
           what="remount of a known bucket (S3 with conditional writes)", figure=figure,
           unit="s", target="≤ 0.5 s", met=figure <= 0.5,
           baseline=f"by hand (juicefs mount + losetup + ext4 mount) {floor:.2f} s; on rclone "
                    f"(lease settle {settle:g} s) {statistics.median(rclone):.2f} s")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"
