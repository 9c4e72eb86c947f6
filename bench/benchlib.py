"""Shared pieces of the storage benchmarks: the S3 server, mounts, timing, clean-up.

Everything a benchmark starts or mounts is registered on a `Cleanup` stack as soon as it
exists, so a failure or Ctrl-C half-way still unmounts, detaches and stops exactly what this
process created (never anything found by name).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.servers import free_port  # noqa: E402,F401 - the benches take it from here
from weldr_agent import runner  # noqa: E402
from weldr_agent.s3 import LocalS3Server  # noqa: E402

# Long keys: rclone serve s3 rejects every request when the keys are very short (measured on these
# machines).
KEY_ID = "weldrbenchaccesskey"
SECRET = "weldrbenchsecretkey0123456789abcdef"
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


class Unavailable(Exception):
    """A target that cannot run on this machine; the reason is printed instead of a number."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Cleanup(contextlib.ExitStack):
    """An ExitStack that also turns SIGTERM/SIGHUP into KeyboardInterrupt while it is open."""

    def __enter__(self) -> Cleanup:
        super().__enter__()
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._interrupt)
        return self

    @staticmethod
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc: object) -> bool:
        # A second Ctrl-C during clean-up must not leave half of it undone.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return bool(super().__exit__(*exc))
        finally:
            signal.signal(signal.SIGINT, previous)
            for sig, handler in self._old.items():
                signal.signal(sig, handler)


def quietly(action: Callable[[], object], what: str) -> Callable[[], None]:
    def call() -> None:
        try:
            action()
        except Exception as error:  # clean-up goes on with the next item
            log(f"clean-up of {what} failed: {error}")
    return call


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def unmount(path: Path) -> None:
    """Unmount a FUSE or block mount that this benchmark made; lazily if it is busy or dead."""
    if not is_mounted(path):
        return
    result = runner.run(["umount", str(path)], timeout=120, check=False)
    if result.returncode != 0 and is_mounted(path):
        runner.run(["umount", "-l", str(path)], timeout=60, check=False)


def start_s3(stack: Cleanup, workdir: Path) -> LocalS3Server:
    server = LocalS3Server(root=workdir / "s3", port=free_port(), key_id=KEY_ID, secret=SECRET)
    server.start()
    stack.callback(quietly(server.stop, "S3 server"))
    return server


def agent_in_process(tmp: Path, env: dict[str, str]) -> LocalS3Server:
    """The agent's settings and databases set up in this process, under `tmp`, on an S3 server
    of its own (returned: the caller stops it); `env` adds or overrides settings."""
    import secrets

    key = "weldrbenchaccess" + secrets.token_hex(4)
    secret = "weldrbenchsecret" + secrets.token_hex(12)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "weldr_agent.settings", "WELDR_ENV_VOL": str(tmp / "vol"),
        "WORKSPACE_BASE": str(tmp / "ws"), "WELDR_RUNTIME_DIR": str(tmp / "run"),
        "S3_ACCESS_KEY_ID": key, "S3_SECRET_ACCESS_KEY": secret, "LOG_LEVEL": "WARNING", **env,
    })
    os.environ.pop("DATABASE_URL", None)
    server = LocalS3Server(root=tmp / "s3", port=free_port(), key_id=key, secret=secret)
    server.start()
    os.environ["S3_ENDPOINT"] = server.endpoint
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)
    call_command("migrate", database="default", verbosity=0)
    call_command("migrate", database="shared", verbosity=0)
    return server


def make_tarball(source: Path, dest: Path) -> int:
    """Pack a source tree (without byte-code caches) into an uncompressed tarball."""
    count = 0

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal count
        if "__pycache__" in info.name.split("/"):
            return None
        count += info.isfile()
        return info

    with tarfile.open(dest, "w") as tar:
        tar.add(source, arcname="tree", filter=keep)
    return count


# ----------------------------------------------------------------------------- block devices

def loop_ext4(stack: Cleanup, *, image: Path, mountpoint: Path, size: str = "4G") -> Path:
    """A new journaled ext4 on a loop device over `image`, mounted at `mountpoint`."""
    make_ext4_image(image, size)
    LoopMount(image, mountpoint).open(stack)
    return mountpoint


def make_ext4_image(image: Path, size: str) -> None:
    """A sparse file holding a new journaled ext4."""
    runner.run(["truncate", "-s", size, str(image)], timeout=60)
    # Lazy init: mkfs must not write the whole image (it may live on a FUSE mount).
    runner.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                str(image)], timeout=300)


@dataclass
class LoopMount:
    """An ext4 image attached to a loop device (ours alone) and mounted; close() undoes both."""

    image: Path
    mountpoint: Path
    device: str = ""

    def open(self, stack: Cleanup) -> LoopMount:
        self.device = runner.run(["losetup", "--find", "--show", str(self.image)],
                                 timeout=60).stdout.strip()
        stack.callback(quietly(self.close, f"{self.device} ({self.image})"))
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        runner.run(["mount", "-t", "ext4", self.device, str(self.mountpoint)], timeout=120)
        return self

    def close(self) -> None:
        unmount(self.mountpoint)
        if self.device:
            # Detach exactly the device attached by open(), once.
            device, self.device = self.device, ""
            runner.run(["losetup", "-d", device], timeout=60)


# ----------------------------------------------------------------------------- JuiceFS

DESIGN_FORMAT = ["--trash-days", "7"]
# The design's JuiceFS configuration, one mount's share of the budget (cache ~500 MB, buffer
# 100-256 MB), with the SQLite settings it names in the DSN.
DESIGN_MOUNT = [
    "--writeback", "--upload-delay", "5m", "--attr-cache", "300", "--entry-cache", "300",
    "--dir-entry-cache", "300", "--open-cache", "0", "--max-uploads", "5",
    "--free-space-ratio", "0.01", "--cache-size", "500", "--buffer-size", "200",
    "-o", "writeback_cache",
]
DESIGN_DSN = "_journal=WAL&_sync=NORMAL&_cache_size=-65536"


@dataclass
class JuiceFS:
    """One JuiceFS volume on the shared S3 server, formatted and mounted by this process."""

    name: str
    s3: LocalS3Server
    root: Path
    meta: str = "sqlite"  # sqlite (on disk) | sqlite-shm (tmpfs) | redis
    dsn: str = "_journal=WAL"
    format_args: Sequence[str] = ()
    mount_args: Sequence[str] = ()
    meta_dir: Path | None = None
    process: runner.Popen[bytes] | None = None
    mountpoint: Path = field(init=False)
    cold_mount_s: float = 0.0
    url: str = ""

    def __post_init__(self) -> None:
        self.mountpoint = self.root / "mnt"

    def env(self) -> dict[str, str]:
        return runner.clean_env({"ACCESS_KEY": KEY_ID, "SECRET_KEY": SECRET})

    def meta_url(self, stack: Cleanup) -> str:
        if self.meta == "redis":
            port = free_port()
            redis_dir = self.root / "redis"
            redis_dir.mkdir(parents=True)
            server = runner.spawn(
                [runner.tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
                log_path=self.root / "redis.log")
            stack.callback(quietly(lambda: runner.stop(server, grace=5), "redis"))
            if not runner.wait_until(lambda: port_open(port), timeout=20):
                raise Unavailable("redis-server did not start")
            return f"redis://127.0.0.1:{port}/1"
        directory = self.meta_dir or self.root
        if self.meta == "sqlite-shm":
            directory = Path("/dev/shm") / f"weldr-bench-{os.getpid()}-{self.name}"
            directory.mkdir(parents=True)
            stack.callback(quietly(lambda: shutil.rmtree(directory), str(directory)))
        return f"sqlite3://{directory}/{self.name}.db?{self.dsn}"

    def start(self, stack: Cleanup) -> Path:
        """Format a new volume and mount it; `cold_mount_s` is the time of both."""
        juicefs = runner.tool("juicefs")
        self.root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.url = self.meta_url(stack)
        bucket = f"{self.s3.endpoint}/jfs-{self.name}"
        runner.run([juicefs, "format", "--storage", "s3", "--bucket", bucket,
                    "--no-update", *self.format_args, self.url, self.name],
                   timeout=120, env=self.env())
        self.mount(stack, self.root / "cache")
        self.cold_mount_s = time.monotonic() - started
        return self.mountpoint

    def mount(self, stack: Cleanup, cache_dir: Path) -> Path:
        """Mount the formatted volume (again) with the given cache folder."""
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.process = runner.spawn(
            [runner.tool("juicefs"), "mount", "--no-usage-report", "--no-syslog",
             "--metrics", f"127.0.0.1:{free_port()}", "--cache-dir", str(cache_dir),
             *self.mount_args, self.url, str(self.mountpoint)],
            log_path=self.root / "juicefs.log", env=self.env())
        process = self.process
        stack.callback(quietly(lambda: runner.stop(process, grace=30), f"juicefs {self.name}"))
        stack.callback(quietly(lambda: unmount(self.mountpoint), str(self.mountpoint)))
        if not runner.wait_until(self.ready, timeout=60, interval=0.1):
            raise Unavailable(f"juicefs mount did not come up; see {self.root / 'juicefs.log'}")
        return self.mountpoint

    def unmount(self) -> None:
        """Unmount and wait for the juicefs process to exit."""
        unmount(self.mountpoint)
        if self.process is not None:
            runner.stop(self.process, grace=60)
            self.process = None

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise Unavailable(f"juicefs exited with {self.process.returncode}: "
                              f"{tail(self.root / 'juicefs.log')}")
        return is_mounted(self.mountpoint) and os.stat(self.mountpoint).st_ino == 1

    def counters(self) -> dict[str, float]:
        """The few .stats counters that say where a step's time went, plus the process CPU."""
        wanted = {
            "juicefs_fuse_ops_durations_histogram_seconds_total": "fuse_ops",
            "juicefs_fuse_ops_durations_histogram_seconds_sum": "fuse_s",
            "juicefs_transaction_durations_histogram_seconds_total": "meta_txn",
            "juicefs_transaction_durations_histogram_seconds_sum": "meta_txn_s",
            "juicefs_meta_ops_durations_histogram_seconds_total": "meta_ops",
            "juicefs_transaction_restart": "txn_restarts",
            "juicefs_staging_blocks": "staged_blocks",
            # The mount runs as a supervisor plus a child serving FUSE: the child reports its
            # own CPU and RSS here.
            "juicefs_process_cpu_seconds_total": "cpu_s",
            "juicefs_process_resident_memory_bytes": "rss_bytes",
            "juicefs_fuse_written_size_bytes_sum": "written_bytes",
            "juicefs_object_request_data_bytes_PUT": "uploaded_bytes",
            "juicefs_staging_block_bytes": "staged_bytes",
            "juicefs_used_space": "used_space",
        }
        found: dict[str, float] = dict.fromkeys([*wanted.values(), "s3_requests"], 0.0)
        text = (self.mountpoint / ".stats").read_text()
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, value = line.rsplit(" ", 1)
            # .stats names object requests per method: ..._seconds_PUT_total, _GET_total, ...
            if key.startswith("juicefs_object_request_durations_histogram_seconds_") \
                    and key.endswith("_total"):
                found["s3_requests"] += float(value)
            elif key in wanted:
                found[wanted[key]] += float(value)
        return found


def bucket_usage(s3: LocalS3Server, bucket: str) -> tuple[int, float]:
    """Objects and MiB in a bucket of the local S3 server (a folder behind rclone serve s3)."""
    count, size = 0, 0
    for directory, _, files in os.walk(s3.root / "data" / bucket):
        for file in files:
            count += 1
            size += os.path.getsize(os.path.join(directory, file))
    return count, size / 2**20


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- other mounts

def create_bucket(s3: LocalS3Server, name: str) -> None:
    # Through the S3 API: a folder made behind rclone serve s3's back stays invisible to it
    # for minutes (its directory cache), and s3fs then fails with NoSuchBucket.
    from weldr_agent.s3 import _client

    _client(s3.endpoint, "us-east-1", KEY_ID, SECRET).create_bucket(Bucket=name)


def rclone_env(s3: LocalS3Server) -> dict[str, str]:
    return runner.clean_env({
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_S3_PROVIDER": "Other",
        "RCLONE_S3_ENDPOINT": s3.endpoint,
        "RCLONE_S3_ACCESS_KEY_ID": KEY_ID,
        "RCLONE_S3_SECRET_ACCESS_KEY": SECRET,
        "RCLONE_S3_FORCE_PATH_STYLE": "true",
        "RCLONE_S3_REGION": "us-east-1",
    })


def rclone_mount(stack: Cleanup, s3: LocalS3Server, root: Path, bucket: str) -> Path:
    create_bucket(s3, bucket)
    mountpoint = root / "mnt"
    mountpoint.mkdir(parents=True)
    process = runner.spawn(
        [runner.tool("rclone"), "mount", f":s3:{bucket}", str(mountpoint),
         "--vfs-cache-mode", "writes", "--cache-dir", str(root / "cache"),
         "--log-level", "NOTICE"],
        log_path=root / "rclone-mount.log", env=rclone_env(s3))
    stack.callback(quietly(lambda: runner.stop(process, grace=30), "rclone mount"))
    stack.callback(quietly(lambda: unmount(mountpoint), str(mountpoint)))
    wait_fuse(process, mountpoint, root / "rclone-mount.log")
    return mountpoint


def s3fs_mount(stack: Cleanup, s3: LocalS3Server, root: Path, bucket: str) -> Path:
    s3fs = shutil.which("s3fs", path=runner.BASE_PATH)
    if s3fs is None:
        raise Unavailable("s3fs is not installed (Debian package s3fs)")
    create_bucket(s3, bucket)
    mountpoint = root / "mnt"
    mountpoint.mkdir(parents=True)
    passwd = root / "passwd-s3fs"
    passwd.write_text(f"{KEY_ID}:{SECRET}\n")
    passwd.chmod(0o600)
    process = runner.spawn(
        [s3fs, bucket, str(mountpoint), "-f", "-o", f"url={s3.endpoint}",
         "-o", "use_path_request_style", "-o", f"passwd_file={passwd}",
         # s3fs 1.90 fails its start-up check against rclone serve s3 without sigv4; few
         # retries keep a failing request from hanging the run for minutes.
         "-o", f"use_cache={root / 'cache'}", "-o", "sigv4", "-o", "retries=2",
         "-o", "dbglevel=warn"],
        log_path=root / "s3fs.log", env=runner.clean_env())
    stack.callback(quietly(lambda: runner.stop(process, grace=30), "s3fs"))
    stack.callback(quietly(lambda: unmount(mountpoint), str(mountpoint)))
    wait_fuse(process, mountpoint, root / "s3fs.log")
    # s3fs stores a directory as a marker object "d/"; rclone serve s3 (a plain folder behind)
    # turns that marker into an empty *file* "d", and every write below it then fails with
    # 500 "file already exists" (measured before the design). Probe it instead of timing a failure.
    try:
        probe = runner.run(["sh", "-c", 'mkdir "$1/probe" && echo x > "$1/probe/file"', "sh",
                            str(mountpoint)], timeout=120, check=False)
        failed = probe.returncode != 0
    except runner.CommandTimeout:
        failed = True
    marker = s3.root / "data" / bucket / "probe"
    if failed or not (marker / "file").is_file():
        kind = "an empty file" if marker.is_file() else "no folder"
        raise Unavailable(
            "s3fs mounts, but cannot store a file inside a directory on rclone serve s3: its "
            f"directory marker 'probe/' became {kind} on the server, and later writes below "
            "it fail with HTTP 500 'file already exists' (an untar hung >10 min)")
    return mountpoint


def wait_fuse(process: runner.Popen[bytes], mountpoint: Path, log_path: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            raise Unavailable(f"exited with {process.returncode}: {tail(log_path)}")
        return is_mounted(mountpoint)
    if not runner.wait_until(up, timeout=60, interval=0.1):
        raise Unavailable(f"mount did not come up: {tail(log_path)}")


# ----------------------------------------------------------------------------- reporting

def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_seconds(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def machine_note() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} (the machine is shared)"


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)


ACCESSLOG_LINE = re.compile(r"\] (\w+) \(.*<([0-9.]+)>\s*$")
