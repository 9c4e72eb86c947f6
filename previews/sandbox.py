"""The sandbox: one OCI container (runc/crun) in a private network namespace, reusable.

Previews use it for apps, the exec app for agent commands. What a sandbox is (docs/sandbox.md):

- root filesystem: the host's /usr /bin /lib /lib64 read-only (merged-/usr links stay links),
  the sandboxes' own /etc (previews/sandbox_etc.py), the workspace read-write at its own path
  (the working directory), a private /tmp;
- own pid, mount, ipc, uts and network namespaces, no user namespace; a non-root user
  (settings.SANDBOX_UID); noNewPrivileges; every capability dropped; kernel files masked and
  a seccomp deny list (`oci.hardening()`); memory+swap/CPU/pids limits in its own cgroup;
- a private netns with a veth link (IPv4 only), taken from a pool made off the critical path;
  an iptables chain per instance drops everything a sandbox sends to the host but replies, and
  a chain per netns slot applies its bucket's egress policy to the rest (egress/);
- a clean environment (never the agent's), logs to a file (never a pipe: `runc run -d` hands
  its stdio to the container), the agent as child subreaper so that container exits are seen.

`bundle_config()` is a pure function (the preview's fields for `oci.config()`, the builder
shared with the exec sandbox); `Sandbox.start()` is the only place that starts one.
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
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

from egress import policy as egress_policy
from egress import services as egress
from previews import oci
from weldr_agent import runner

logger = logging.getLogger("weldr.sandbox")

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A /22 per agent instance inside 10.64.0.0/10: 256 /30 links, chosen by the instance id so two
# agents (or two test runs) on one machine do not collide.
LINK_BLOCKS = ipaddress.ip_network("10.64.0.0/10")
LINKS_PER_INSTANCE = 256
POOL_SIZE = 2
FENCE_WAIT_SECONDS = 120
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
    # and the workspace is bound into it on the host later (previews/warm.py). None: `workspace`
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
# Network namespaces with a veth link, pooled
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Netns:
    """A network namespace `name` linked to the host by veth `host_if` <-> `inner_if`."""

    slot: int
    name: str
    host_if: str
    inner_if: str
    host_ip: str
    ip: str

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name


def _instance_block() -> ipaddress.IPv4Network:
    blocks = 2 ** (22 - LINK_BLOCKS.prefixlen)
    index = int(hashlib.sha256(settings.INSTANCE_ID.encode()).hexdigest(), 16) % blocks
    return list(LINK_BLOCKS.subnets(new_prefix=22))[index]


def netns_for(slot: int) -> Netns:
    """Names and addresses of link `slot` (pure); names fit IFNAMSIZ (15)."""
    base = _instance_block().network_address + 4 * slot
    prefix = f"w{settings.INSTANCE_ID}"
    return Netns(slot=slot, name=f"weldr-{settings.INSTANCE_ID}-{slot}",
                 host_if=f"{prefix}h{slot}", inner_if=f"{prefix}c{slot}",
                 host_ip=str(base + 1), ip=str(base + 2))


def netns_create_batches(ns: Netns) -> tuple[str, str]:
    """`ip -batch` input for the host side and for the namespace side (pure).

    No IPv6 on the link: `addrgenmode none` before the links come up, so neither end gets a
    link-local address (the sandbox could otherwise reach the host's ports at fe80::…%veth,
    which no IPv4 rule sees); the sandbox has no CAP_NET_ADMIN to add one.
    """
    host = (f"netns add {ns.name}\n"
            f"link add {ns.host_if} type veth peer name {ns.inner_if} netns {ns.name}\n"
            f"link set {ns.host_if} addrgenmode none\n"
            f"addr add {ns.host_ip}/30 dev {ns.host_if}\n"
            f"link set {ns.host_if} up\n")
    inner = (f"link set {ns.inner_if} addrgenmode none\n"
             f"addr add {ns.ip}/30 dev {ns.inner_if}\n"
             f"link set {ns.inner_if} up\n"
             "link set lo up\n"
             f"route add default via {ns.host_ip}\n")
    return host, inner


def firewall_chain() -> str:
    return f"WELDR-{settings.INSTANCE_ID}"


def firewall_rules(*, version: int = 4) -> list[list[str]]:
    """iptables (or ip6tables) argv, without the binary, that fence this instance's sandboxes.

    A sandbox may answer connections the host opened to it (the preview proxy) and nothing
    else of the host: not the agent's API, not any host port on any of its addresses. What it
    sends beyond the host goes through the chain of its netns slot (`egress_base_restore`),
    which applies its bucket's egress policy (egress/policy.py). Both IP versions, although
    sandboxes get no IPv6 (`netns_create_batches`): a future IPv6 link is fenced already.
    """
    chain, ifs = firewall_chain(), f"w{settings.INSTANCE_ID}+"
    rules = [
        ["-N", chain],
        ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-A", chain, "-j", "DROP"],
        ["-I", "INPUT", "-i", ifs, "-j", chain],
        ["-I", "FORWARD", "-i", ifs, "-j", egress_policy.out_chain(settings.INSTANCE_ID)],
        ["-I", "FORWARD", "-i", ifs, "-o", "w+", "-j", "DROP"],
    ]
    if settings.SANDBOX_OUTBOUND and version == 4:
        block = str(_instance_block())
        rules += [["-t", "nat", "-A", "POSTROUTING", "-s", block, "!", "-o", "w+",
                   "-j", "MASQUERADE"]]
    return rules


def firewall_teardown_rules(*, version: int = 4) -> list[list[str]]:
    chain, ifs = firewall_chain(), f"w{settings.INSTANCE_ID}+"
    rules = [["-D", "INPUT", "-i", ifs, "-j", chain],
             ["-D", "FORWARD", "-i", ifs, "-o", "w+", "-j", "DROP"],
             ["-D", "FORWARD", "-i", ifs, "-j", egress_policy.out_chain(settings.INSTANCE_ID)],
             ["-F", chain], ["-X", chain]]
    if settings.SANDBOX_OUTBOUND and version == 4:
        rules.append(["-t", "nat", "-D", "POSTROUTING", "-s", str(_instance_block()),
                      "!", "-o", "w+", "-j", "MASQUERADE"])
    return rules


def egress_base_restore(*, version: int) -> str:
    """iptables-restore input: the chain that dispatches a sandbox's packets by veth (pure).

    A veth with no slot chain yet is rejected; a slot's chain is made with its netns, holding
    the default policy, and given its bucket's when a sandbox starts there (egress/services.py);
    a start whose policy cannot be applied fails, and a released slot rejects everything.
    """
    reject = ("REJECT --reject-with icmp-admin-prohibited" if version == 4
              else "REJECT --reject-with icmp6-adm-prohibited")
    return egress_policy.restore_input({egress_policy.out_chain(settings.INSTANCE_ID):
                                        [f"-j {reject}"]})


def egress_teardown_restore(listed: str) -> str:
    """iptables-restore input removing this instance's egress chains found in `iptables -S`."""
    prefix = f"{egress_policy.out_chain(settings.INSTANCE_ID)[:-3]}"
    names = [line.split()[1] for line in listed.splitlines()
             if line.startswith("-N ") and line.split()[1].startswith(prefix)
             and line.split()[1] != firewall_chain()]
    if not names:
        return ""
    return "*filter\n" + "".join(f"-F {n}\n" for n in names) + \
        "".join(f"-X {n}\n" for n in names) + "COMMIT\n"


def _iptables(rules: list[list[str]], *, check: bool, binary: str = "iptables") -> None:
    path = runner.tool(binary)
    for rule in rules:
        runner.run([path, "-w", "10", *rule], timeout=30, check=check)


def _egress_teardown(binary: str) -> None:
    listed = runner.run([runner.tool(binary), "-w", "10", "-S"], timeout=30, check=False).stdout
    text = egress_teardown_restore(listed)
    if text:
        runner.run([runner.tool(f"{binary}-restore"), "-w", "10", "--noflush"], input=text,
                   timeout=60, check=False)


def firewall_up() -> None:
    """(Re)install this instance's fence and its egress chains, IPv4 and IPv6; idempotent."""
    firewall_down()
    egress.chains_forget()
    for version, binary in egress.families():
        runner.run([runner.tool(f"{binary}-restore"), "-w", "10", "--noflush"], timeout=60,
                   input=egress_base_restore(version=version))
        _iptables(firewall_rules(version=version), check=True, binary=binary)
    if settings.SANDBOX_OUTBOUND:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def firewall_down() -> None:
    for version, binary in egress.families():
        _iptables(firewall_teardown_rules(version=version), check=False, binary=binary)
        _egress_teardown(binary)


def _netns_create(ns: Netns) -> None:
    ip = runner.tool("ip")
    _netns_delete(ns)
    # A slot's chain may still hold the policy of its previous bucket: the default's now.
    egress.sandbox_prepare(slot=ns.slot, interface=ns.host_if)
    host, inner = netns_create_batches(ns)
    runner.run([ip, "-batch", "-"], input=host, timeout=30)
    runner.run([ip, "-n", ns.name, "-batch", "-"], input=inner, timeout=30)


def _netns_delete(ns: Netns) -> None:
    ip = runner.tool("ip")
    # The host end first and explicitly: namespace deletion frees it asynchronously
    # (docs/sandbox.md).
    runner.run([ip, "link", "del", ns.host_if], timeout=30, check=False)
    runner.run([ip, "netns", "del", ns.name], timeout=30, check=False)


class NetnsPool:
    """Namespaces made ahead of time by a background thread; returned ones are reused."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self._lock = threading.Condition()
        self._ready: list[Netns] = []
        self._used: set[int] = set()
        self._started = False
        self._fenced = threading.Event()
        self._closed = False

    def _free_slot(self) -> int:
        for slot in range(LINKS_PER_INSTANCE):
            if slot not in self._used:
                self._used.add(slot)
                return slot
        raise SandboxError([], "No free network namespace slot left for sandboxes.")

    def start(self) -> None:
        """Clear what a previous agent left, fence the instance, start filling the pool."""
        with self._lock:
            first, self._started = not self._started, True
        if not first:
            # A netns made before the fence is up would get its egress chain torn down with
            # the previous agent's (or fail to jump to a dispatch chain not made yet).
            self._fenced.wait(FENCE_WAIT_SECONDS)
            return
        try:
            self.reset()
            firewall_up()
        finally:
            self._fenced.set()
        threading.Thread(target=self._fill, name="netns-pool", daemon=True).start()

    def reset(self, *, everything: bool = False) -> None:
        """Delete this instance's namespaces not in use (all of them with `everything`)."""
        listed = runner.run([runner.tool("ip"), "netns", "list"], timeout=30).stdout
        prefix = f"weldr-{settings.INSTANCE_ID}-"
        for line in listed.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                slot = int(name[len(prefix):])
                with self._lock:
                    if slot in self._used and not everything:
                        continue
                _netns_delete(netns_for(slot))

    def _fill(self) -> None:
        while True:
            with self._lock:
                while len(self._ready) >= self.size and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                slot = self._free_slot()
            ns = netns_for(slot)
            try:
                _netns_create(ns)
            except runner.CommandError:
                logger.exception("could not make network namespace %s", ns.name)
                with self._lock:
                    self._used.discard(slot)
                time.sleep(1.0)
                continue
            with self._lock:
                closed = self._closed
                if not closed:
                    self._ready.append(ns)
                    self._lock.notify_all()
            if closed:
                # Shut down while this one was being made: it must not outlive the pool.
                _netns_delete(ns)
                return

    def acquire(self, *, bucket: str | None = None) -> Netns:
        """A ready namespace: from the pool when there is one, else made now.

        With `bucket`, its egress policy is applied (`assign`); without, it holds the default
        policy until it is assigned (a warm sandbox's, whose process has not started).
        """
        self.start()
        ns = self._take()
        if bucket is not None:
            try:
                self.assign(ns, bucket=bucket)
            except Exception:
                self.release(ns)
                raise
        return ns

    def _take(self) -> Netns:
        with self._lock:
            if self._ready:
                ns = self._ready.pop()
                self._lock.notify_all()
                return ns
            slot = self._free_slot()
        ns = netns_for(slot)
        try:
            _netns_create(ns)
        except Exception:
            with self._lock:
                self._used.discard(slot)
            raise
        return ns

    def assign(self, ns: Netns, *, bucket: str) -> None:
        """Give `ns` the egress policy of `bucket` (before the sandbox's process starts)."""
        egress.sandbox_attach(slot=ns.slot, interface=ns.host_if, bucket=bucket)

    def release(self, ns: Netns) -> None:
        """Give a namespace back; it is deleted and made afresh off the critical path."""
        def recycle() -> None:
            try:
                # After shutdown the chains are gone; emptying one would make it anew.
                if not self._closed:
                    egress.sandbox_detach(slot=ns.slot, interface=ns.host_if)
            except runner.CommandError:
                logger.exception("could not empty the egress chain of slot %s", ns.slot)
            _netns_delete(ns)
            with self._lock:
                self._used.discard(ns.slot)
                self._lock.notify_all()
        threading.Thread(target=recycle, name=f"netns-del-{ns.slot}", daemon=True).start()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            ready, self._ready = self._ready, []
        for ns in ready:
            _netns_delete(ns)
        # Namespaces still being recycled by daemon threads would outlive the process.
        self.reset(everything=True)
        firewall_down()


pool = NetnsPool()


# ---------------------------------------------------------------------------------------------
# A running sandbox
# ---------------------------------------------------------------------------------------------

def runtime() -> tuple[str, Path]:
    """The runtime's binary and its state directory (under RUNTIME_DIR, a tmpfs in production)."""
    name = oci.detector.detect()
    if name is None:
        raise SandboxError([], f"No OCI runtime can start a container here: {oci.detector.error}")
    return runner.tool(name), oci.runtime_root(name)


class Launcher(Protocol):
    def __call__(self, *, binary: str, root: Path, bundle: Path, pid_file: Path,
                 name: str) -> list[str]: ...


def run_argv(*, binary: str, root: Path, bundle: Path, pid_file: Path, name: str) -> list[str]:
    """`runc run -d`: start the container detached; its init is re-parented to us."""
    return [binary, "--root", str(root), "run", "-d", "--pid-file", str(pid_file),
            "--bundle", str(bundle), name]


def create_argv(*, binary: str, root: Path, bundle: Path, pid_file: Path,
                name: str) -> list[str]:
    """`runc create`: namespaces, mounts and cgroup made, the init blocked until a start."""
    return [binary, "--root", str(root), "create", "--pid-file", str(pid_file),
            "--bundle", str(bundle), name]


EXEC_FIFO = "exec.fifo"


class Sandbox:
    """One container: `start()` it, `wait()` for it or `stop()` it; `destroy()` cleans up.

    Or in two steps: `create()` ahead of time, `begin()` when it is needed.
    """

    def __init__(self, spec: Spec, *, log_path: Path,
                 on_exit: Callable[[Sandbox, int], None] | None = None,
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

    def create(self, *, timeout: float = 60.0) -> int:
        """Create the container without starting its process; its init's pid."""
        return self._launch(create_argv, timeout=timeout)

    def begin(self, *, timeout: float = 10.0) -> None:
        """Start a created container's process.

        What `runc start` does, without its ~10 ms Go start-up: the init waits, blocked in
        opening the runtime's exec fifo for writing; reading it lets the init exec the process,
        removing it makes the runtime report the container running. Where there is no fifo (a
        runtime with another layout), `<runtime> start`.
        """
        assert self._runtime is not None and self.pid is not None
        binary, root = self._runtime
        # crun's fifo works the other way round (its init reads, `crun start` writes): reading
        # it waits forever. crun is C: its own start costs milliseconds.
        if Path(binary).name == "crun":
            runner.run([binary, "--root", root, "start", self.name], timeout=timeout)
            return
        fifo = root / self.name / EXEC_FIFO
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            runner.run([binary, "--root", root, "start", self.name], timeout=timeout)
            return
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            deadline = time.monotonic() + timeout
            # Polled in slices: an init that died never opens the fifo (no POLLHUP then).
            while not poller.poll(50):
                if not self.running or time.monotonic() > deadline:
                    raise SandboxError([binary, "start"], "The container's init is gone.")
            if not os.read(fd, 64):
                raise SandboxError([binary, "start"], "The container's init did not start.")
        finally:
            os.close(fd)
        fifo.unlink(missing_ok=True)

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
            tail = _log_tail(self.log_path)
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


def _log_tail(path: Path, size: int = 2000) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


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
