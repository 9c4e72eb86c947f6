"""OCI runtime detection and the smallest bundle that proves a runtime starts a container.

crun is preferred; it fails on these machines ("cgroups in hybrid mode not supported"), so the
runtime is chosen by actually starting a container with each candidate (ENVIRONMENT.md).
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from weldr_agent import runner

logger = logging.getLogger("weldr.oci")

HOST_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc")

# What every sandbox (previews, exec) hides or freezes of the kernel's files (as Docker does).
MASKED_PATHS = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# System calls no build, dev server or test needs, refused with EPERM: kernel keyrings, eBPF,
# perf, kernel modules and kexec, clock and swap administration, raw I/O ports, handle-based
# opens (a way out of bind mounts), userfaultfd (a kernel-exploit staple). A deny list, not an
# allow list: the workloads are arbitrary toolchains. unshare/clone with namespace flags and
# mount stay allowed: the exec daemon gives each command a PID and mount namespace inside its
# own user namespace.
DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "nfsservctl",
    "open_by_handle_at", "perf_event_open", "query_module", "quotactl", "reboot",
    "request_key", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl",
    "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
]
SECCOMP_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def seccomp_profile() -> dict[str, Any]:
    """The OCI `linux.seccomp` of every sandbox: allow, except DENIED_SYSCALLS (EPERM)."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": SECCOMP_ARCHITECTURES.get(platform.machine(), []),
        "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }


def hardening(*, mask_proc: bool = True) -> dict[str, Any]:
    """The `linux` keys that sandboxes share: the seccomp profile, and masked and read-only
    kernel files unless `mask_proc` is False.

    The exec sandbox passes False: its daemon mounts a fresh /proc for each command's PID
    namespace, and the kernel refuses that mount inside a user namespace while any file of the
    current /proc is covered ("too revealing"), so masks would leave commands seeing every
    process of the sandbox. A fresh /proc mounted by an unprivileged user is restricted anyway:
    /proc/sys is read-only to it, kcore and the sysrq trigger are root's, keys are its own.
    """
    linux: dict[str, Any] = {"seccomp": seccomp_profile()}
    if mask_proc:
        linux.update(maskedPaths=list(MASKED_PATHS), readonlyPaths=list(READONLY_PATHS))
    return linux
PROBE_TTL_SECONDS = 300.0


def probe_spec(rootfs: Path, uid: int) -> dict[str, Any]:
    """The OCI config of the runtime probe: `/bin/true`, unprivileged, in fresh namespaces."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ]
    for directory in HOST_SYSTEM_DIRS:
        if Path(directory).is_dir() and not Path(directory).is_symlink():
            mounts.append({"destination": directory, "type": "bind", "source": directory,
                           "options": ["rbind", "ro", "nosuid", "nodev"]})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": True,
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "probe",
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "mount", "ipc", "uts", "network")],
            "resources": {"memory": {"limit": 64 * 1024 * 1024}, "pids": {"limit": 16}},
        },
    }


def rootfs_skeleton(rootfs: Path) -> None:
    """Mount points for the host's system directories; merged-/usr links stay links."""
    for directory in ("proc", "dev", "tmp"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    for directory in HOST_SYSTEM_DIRS:
        host, inside = Path(directory), rootfs / directory.lstrip("/")
        if host.is_symlink():
            if not inside.is_symlink():
                inside.symlink_to(host.readlink())
        elif host.is_dir():
            inside.mkdir(parents=True, exist_ok=True)


# The host names sandboxes get (exec: `sandbox`, previews: `preview`), resolved by hosts_file.
SANDBOX_HOSTNAMES = ("sandbox", "preview")


def hosts_path() -> Path:
    return settings.RUNTIME_DIR / "hosts"


def hosts_file() -> Path:
    """Write the /etc/hosts bound over the host's in every sandbox: its own host name resolves
    locally. Without it a tool that looks up its host name (git's default identity, Python's
    getfqdn) waits ~10 s for a DNS server that a sandbox cannot reach."""
    path = hosts_path()
    # Both families: a lookup that tries IPv6 first would otherwise go on to DNS.
    names = " ".join(SANDBOX_HOSTNAMES)
    content = (f"127.0.0.1\tlocalhost {names}\n"
               f"::1\tlocalhost ip6-localhost ip6-loopback {names}\n")
    if not path.is_file() or path.read_text() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        staging.write_text(content)
        staging.chmod(0o644)
        staging.replace(path)
    return path


def runtime_root(name: str) -> Path:
    return settings.RUNTIME_DIR / name


def _probe(name: str) -> str | None:
    """Start a container with runtime `name`; None when it works, else the reason it did not."""
    try:
        binary = runner.tool(name)
    except runner.CommandNotFound:
        return f"{name} is not installed"
    bundle = Path(tempfile.mkdtemp(prefix=f"weldr-probe-{name}-"))
    try:
        rootfs = bundle / "rootfs"
        rootfs_skeleton(rootfs)
        (bundle / "config.json").write_text(json.dumps(probe_spec(rootfs, settings.SANDBOX_UID)))
        container = f"weldr-probe-{secrets.token_hex(4)}"
        runner.run([binary, "--root", runtime_root(name), "run", "--bundle", bundle, container],
                   timeout=30)
        return None
    except runner.CommandError as error:
        return str(error)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


class RuntimeDetector:
    """Chooses crun or runc once, and re-proves the choice at most every PROBE_TTL_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._name: str | None = None
        self._error: str = "not probed yet"
        self._checked_at = 0.0

    def candidates(self) -> tuple[str, ...]:
        if settings.OCI_RUNTIME == "auto":
            return ("crun", "runc")
        return (settings.OCI_RUNTIME,)

    def detect(self, *, force: bool = False) -> str | None:
        with self._lock:
            fresh = time.monotonic() - self._checked_at < PROBE_TTL_SECONDS
            if fresh and not force:
                return self._name
            errors = []
            self._name = None
            for name in self.candidates():
                reason = _probe(name)
                if reason is None:
                    self._name = name
                    break
                errors.append(f"{name}: {reason}")
                logger.warning("OCI runtime %s cannot run here: %s", name, reason)
            self._error = "; ".join(errors)
            self._checked_at = time.monotonic()
            return self._name

    @property
    def error(self) -> str:
        return self._error


detector = RuntimeDetector()
