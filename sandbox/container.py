"""A container: one OCI container (runc/crun) in a private network namespace (sandbox/network.py).

Previews and the warm pool use it for apps; the commands app's per-bucket sandbox is
sandbox/bucket.py. What a sandbox is (docs/sandbox.md):

- root filesystem: the host's /usr /bin /lib /lib64 read-only (merged-/usr links stay links),
  the sandboxes' own /etc (sandbox/etc.py), the workspace read-write at its own path
  (the working directory), a private /tmp;
- own pid, mount, ipc, uts and network namespaces, no user namespace; a non-root user
  (settings.SANDBOX_UID); noNewPrivileges; every capability dropped; kernel files masked and
  a seccomp deny list (`oci.hardening()`); memory+swap/CPU/pids limits in its own cgroup;
- a private netns with a veth link (IPv4 only), taken from a pool made off the critical path;
  an iptables chain per instance drops everything a sandbox sends to the host but replies, and
  a chain per netns slot applies its bucket's egress policy to the rest (egress/);
- a clean environment (never the agent's), logs to a file (never a pipe: `runc run -d` hands
  its stdio to the container), the agent as child subreaper so that container exits are seen.

The netns, the fence and the egress chains: sandbox/network.py.

`bundle_config()` is a pure function (the preview's fields for `oci.config()`, the builder
shared with the bucket sandbox); `Container.start()` is the only place that starts one.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings

from sandbox import oci
from sandbox import runtime as runtime_detection
from weldr_agent import runner

logger = logging.getLogger("weldr.sandbox")

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PR_SET_CHILD_SUBREAPER = 36


class SandboxError(runner.CommandError):
    """A sandbox could not be made or started; the detail carries the runtime's log tail."""


# ---------------------------------------------------------------------------------------------
# The OCI bundle (pure)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    """What one sandbox runs and sees; `args` run as pid 1 in the workspace."""

    name: str
    workspace: Path
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    netns: Path | None = None
    hostname: str = "sandbox"
    # (host path, path inside, read-only) for extra files such as a run script.
    binds: Sequence[tuple[Path, str, bool]] = ()
    # Warm sandboxes: this host directory is mounted read-only at `workspace`, as a mount slave,
    # and the workspace is bound into it on the host later (sandbox/warm.py). None: `workspace`
    # itself, read-write.
    workspace_from: Path | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    pids: int | None = None
    uid: int | None = None


def sandbox_env(extra: Mapping[str, str] | None = None) -> list[str]:
    """The container's whole environment: a few basics and `extra`, nothing of the agent's.

    An inherited NODE_EXTRA_CA_CERTS alone doubles Node's start-up (docs/sandbox.md).
    """
    env = {"PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp"}
    env.update(extra or {})
    return [f"{key}={value}" for key, value in env.items()]


def bundle_config(spec: Spec, *, rootfs: Path) -> dict[str, Any]:
    """The OCI config.json of a sandbox (pure: no I/O beyond looking at the host's /)."""
    mounts: list[dict[str, Any]] = []
    if spec.workspace_from is None:
        mounts.append(oci.bind(spec.workspace, str(spec.workspace), readonly=False))
    else:
        slave = oci.bind(spec.workspace_from, str(spec.workspace), readonly=True)
        slave["options"].append("rslave")
        mounts.append(slave)
    mounts += [oci.bind(src, dst, readonly=ro) for src, dst, ro in spec.binds]
    return oci.config(oci.SandboxConfig(
        name=spec.name, args=spec.args, env=sandbox_env(spec.env),
        cwd=str(spec.cwd or spec.workspace), hostname=spec.hostname,
        uid=spec.uid if spec.uid is not None else settings.SANDBOX_UID,
        memory_mb=spec.memory_mb or settings.SANDBOX_MEMORY_MB,
        cpus=spec.cpus or settings.SANDBOX_CPUS,
        pids=spec.pids or settings.SANDBOX_PIDS,
        mounts=mounts, netns=spec.netns,
    ), rootfs=rootfs)


def sandbox_rootfs() -> Path:
    """The shared, empty root of every sandbox of this instance (mount points only)."""
    rootfs = settings.RUNTIME_DIR / "rootfs"
    if not (rootfs / "etc").is_dir():
        oci.rootfs_skeleton(rootfs)
    oci.hosts_file()
    # The private /tmp tmpfs takes this directory's mode (the 1777 trap, docs/sandbox.md).
    (rootfs / "tmp").chmod(0o1777)
    return rootfs


# ---------------------------------------------------------------------------------------------
# Subreaper: detached container inits are reparented to us, so that we can wait for them
# ---------------------------------------------------------------------------------------------

_subreaper_lock = threading.Lock()
_subreaper = False


def ensure_subreaper() -> None:
    global _subreaper
    with _subreaper_lock:
        if _subreaper:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        _subreaper = True


# ---------------------------------------------------------------------------------------------
# A running sandbox
# ---------------------------------------------------------------------------------------------

def runtime() -> tuple[str, Path]:
    """The runtime's binary and its state directory (under RUNTIME_DIR, a tmpfs in production)."""
    detector = runtime_detection.detector
    name = detector.detect()
    if name is None:
        raise SandboxError([], f"No OCI runtime can start a container here: {detector.error}")
    return runner.tool(name), runtime_detection.runtime_root(name)


class Launcher(Protocol):
    def __call__(self, *, binary: str, root: Path, bundle: Path, pid_file: Path,
                 name: str) -> list[str]: ...


def run_argv(*, binary: str, root: Path, bundle: Path, pid_file: Path, name: str) -> list[str]:
    """`runc run -d`: start the container detached; its init is re-parented to us."""
    return [binary, "--root", str(root), "run", "-d", "--pid-file", str(pid_file),
            "--bundle", str(bundle), name]


class Container:
    """One container: `start()` it, `wait()` for it or `stop()` it; `destroy()` cleans up."""

    def __init__(self, spec: Spec, *, log_path: Path,
                 on_exit: Callable[[Container, int], None] | None = None,
                 launcher: Launcher | None = None) -> None:
        self.spec = spec
        self.launcher = launcher or run_argv
        self.log_path = log_path
        self.on_exit = on_exit
        self.bundle = settings.RUNTIME_DIR / "bundles" / spec.name
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._exited = threading.Event()
        self._runtime: tuple[str, Path] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self, *, timeout: float = 60.0) -> int:
        """Create and start the container; its init's pid. Logs go to `log_path`."""
        return self._launch(self.launcher, timeout=timeout)

    def _launch(self, launcher: Launcher, *, timeout: float) -> int:
        ensure_subreaper()
        binary, root = self._runtime = runtime()
        self.bundle.mkdir(parents=True, exist_ok=True)
        config = bundle_config(self.spec, rootfs=sandbox_rootfs())
        (self.bundle / "config.json").write_text(json.dumps(config))
        pid_file = self.bundle / "pid"
        # `run -d` hands its own stdio to the container: a log file, never a pipe (docs/sandbox.md).
        argv = launcher(binary=binary, root=root, bundle=self.bundle, pid_file=pid_file,
                        name=self.name)
        process = runner.spawn(argv, log_path=self.log_path, env=runner.clean_env())
        if not _exits_within(process.pid, timeout):
            runner.kill_group(process.pid)
            process.wait()
            self.destroy()
            raise SandboxError([binary, "run"],
                               f"{binary} run timed out after {timeout:g}s.")
        code = process.wait()
        if code != 0 or not pid_file.exists():
            tail = runner.log_tail(self.log_path)
            self.destroy()
            raise SandboxError([binary, "run"], f"The container did not start: {tail}",
                               returncode=code, stderr_tail=tail)
        self.pid = int(pid_file.read_text().strip())
        threading.Thread(target=self._reap, name=f"reap-{self.name}", daemon=True).start()
        return self.pid

    def _reap(self) -> None:
        assert self.pid is not None
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
            # Killed by a signal: report it the shell's way (128 + signal number).
            self.exit_code = 128 - code if code < 0 else code
        except ChildProcessError:
            # Not our child (a subreaper further up took it): poll until it is gone.
            while runner.pid_alive(self.pid):
                time.sleep(0.1)
            self.exit_code = -1
        self._exited.set()
        if self.on_exit is not None:
            try:
                self.on_exit(self, self.exit_code)
            except Exception:
                logger.exception("on_exit of sandbox %s failed", self.name)

    @property
    def running(self) -> bool:
        return self.pid is not None and not self._exited.is_set()

    def wait(self, timeout: float | None = None) -> int | None:
        if self.pid is None:
            return self.exit_code
        self._exited.wait(timeout)
        return self.exit_code

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.pid is not None
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, *, grace: float) -> int | None:
        """SIGTERM, `grace` seconds, SIGKILL; then `destroy()`. Idempotent."""
        if self.running:
            self.signal(signal.SIGTERM)
            if self.wait(grace) is None and self.running:
                # pid 1 gone takes the whole pid namespace with it.
                self.signal(signal.SIGKILL)
                self.wait(30)
        self.destroy()
        return self.exit_code

    def destroy(self) -> None:
        """Remove the container's state, cgroup and bundle (idempotent, never raises)."""
        if self._runtime is None:
            try:
                self._runtime = runtime()
            except SandboxError:
                self._runtime = None
        if self._runtime is not None:
            binary, root = self._runtime
            try:
                runner.run([binary, "--root", root, "delete", "--force", self.name], timeout=30,
                           check=False)
            except runner.CommandError:
                logger.exception("could not delete container %s", self.name)
        shutil.rmtree(self.bundle, ignore_errors=True)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_parent_remove(instance: str | None = None, *, timeout: float = 5) -> None:
    """An instance's (this agent's) parent cgroup, in every hierarchy: the runtime makes it for
    the first sandbox and leaves it when the last is deleted. `rmdir` only: one still holding a
    sandbox stays. At shutdown, after every sandbox of the instance is deleted; a `runc run`
    whose container was deleted under it may still be removing that container's groups, so each
    removal is retried for up to `timeout` seconds in all (a parent group was left so, empty,
    after some agents' shutdowns)."""
    name = oci.cgroup_parent(instance)
    hierarchies = [CGROUP_ROOT, *(CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ())]
    deadline = time.monotonic() + timeout
    for hierarchy in hierarchies:
        refused = runner.cgroup_rmdir(hierarchy / name,
                                      timeout=max(0.0, deadline - time.monotonic()))
        if refused is not None:
            logger.warning("cgroup %s kept: %s", hierarchy / name, refused.strerror)


def _exits_within(pid: int, timeout: float) -> bool:
    """Whether child `pid` ends within `timeout`; woken by its exit, not by polling.

    Twenty cold starts at once each polled `poll()` every 2 ms: twenty threads fighting for the
    GIL with the request thread. A pidfd becomes readable when the process exits.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()  # not select(): agent fds may be numbered past 1024
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


def container_prefix() -> str:
    return f"weldr-{settings.INSTANCE_ID}-"


def containers() -> list[str]:
    """Names of this instance's containers the runtime knows (for reconciliation)."""
    binary, root = runtime()
    if not root.exists():
        return []
    listed = runner.run([binary, "--root", root, "list", "-q"], timeout=30, check=False).stdout
    # RUNTIME_DIR may be shared by several agents: only names carrying our instance id.
    return [name for name in listed.split() if name.startswith(container_prefix())]


def container_delete(name: str) -> None:
    binary, root = runtime()
    runner.run([binary, "--root", root, "delete", "--force", name], timeout=30, check=False)
