"""The one OCI configuration builder of every sandbox.

`config()` builds the config.json of preview and exec sandboxes alike from a `SandboxConfig`,
whose fields are everything that differs between the two; the rest (namespaces, no
capabilities, the seccomp profile, the sandbox's own /etc, memory + swap, CPU and pids limits,
a cgroup of its own) is the same for all, so the two cannot drift apart again.

The two front-ends fill it in: `container.bundle_config()` (previews, warm sandboxes) and
`bucket_spec.sandbox_spec()` (a bucket's command sandbox). Which runtime runs it:
sandbox/runtime.py.
"""

from __future__ import annotations

import errno
import logging
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from sandbox.etc import HOSTNAMES, etc_dir, sandbox_etc

logger = logging.getLogger("weldr.oci")

# The host's system directories every sandbox gets read-only. Not /etc: sandboxes get their own
# (sandbox/etc.py), without the host's users, keys and package configuration.
HOST_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64")
CFS_PERIOD_US = 100_000

# What every sandbox (previews, exec) hides or freezes of the kernel's files (as Docker does).
MASKED_PATHS = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# System calls no build, dev server or test needs, refused with EPERM: kernel keyrings, eBPF,
# perf, kernel modules and kexec, clock and swap administration, raw I/O ports, handle-based
# opens (a way out of bind mounts), userfaultfd (a kernel-exploit staple), and setns (there is
# no namespace a sandbox has any business joining). A deny list, not an allow list: the
# workloads are arbitrary toolchains.
DENIED_SYSCALLS = [
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "init_module", "ioperm", "iopl",
    "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "nfsservctl",
    "open_by_handle_at", "perf_event_open", "query_module", "quotactl", "reboot",
    "request_key", "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl",
    "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
]
CLONE_NEWUSER = 0x10000000
SECCOMP_ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def _errno(names: list[str], code: int, **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": code, **extra}


def seccomp_profile(*, user_namespaces: bool = False) -> dict[str, Any]:
    """The OCI `linux.seccomp` of every sandbox: allow, except DENIED_SYSCALLS (EPERM), clone3
    (ENOSYS) and, unless `user_namespaces`, a new user namespace (EPERM).

    No user namespaces: inside one, an unprivileged process is root with every capability
    over its own namespaces, which opens most of the kernel's attack surface (netfilter,
    mount, ...) to it. clone and unshare are refused only with CLONE_NEWUSER in their flags;
    clone3 passes its flags in memory, where seccomp cannot look, so it is refused entirely
    with ENOSYS, the answer that makes glibc (and Go, and Node's libuv) fall back to clone.

    `user_namespaces` is for the exec sandbox alone: its daemon enters one user namespace at
    start and then installs this same refusal itself for every command (sandboxd.py).
    """
    rules = [_errno(DENIED_SYSCALLS, errno.EPERM), _errno(["clone3"], errno.ENOSYS)]
    if not user_namespaces:
        newuser = [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                    "op": "SCMP_CMP_MASKED_EQ"}]
        rules += [_errno(["unshare"], errno.EPERM, args=newuser),
                  _errno(["clone"], errno.EPERM, args=newuser)]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": SECCOMP_ARCHITECTURES.get(platform.machine(), []),
        "syscalls": rules,
    }


def hardening(*, mask_proc: bool = True, user_namespaces: bool = False) -> dict[str, Any]:
    """The `linux` keys that sandboxes share: the seccomp profile, and masked and read-only
    kernel files unless `mask_proc` is False.

    The exec sandbox passes False: its daemon mounts a fresh /proc for each command's PID
    namespace, and the kernel refuses that mount inside a user namespace while any file of the
    current /proc is covered ("too revealing"), so masks would leave commands seeing every
    process of the sandbox. A fresh /proc mounted by an unprivileged user is restricted anyway:
    /proc/sys is read-only to it, kcore and the sysrq trigger are root's, keys are its own.
    """
    linux: dict[str, Any] = {"seccomp": seccomp_profile(user_namespaces=user_namespaces)}
    if mask_proc:
        linux.update(maskedPaths=list(MASKED_PATHS), readonlyPaths=list(READONLY_PATHS))
    return linux


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SandboxConfig:
    """What differs between sandboxes (a preview, an exec sandbox); `config()` adds the rest."""

    # The container's name; its cgroup is /weldr-<INSTANCE_ID>/<name>.
    name: str
    args: Sequence[str]
    # The whole environment, "NAME=value": never the agent's.
    env: Sequence[str]
    cwd: str
    hostname: str
    uid: int
    memory_mb: int
    cpus: float
    pids: int
    # Mounted after the system ones (/tmp included, so a workspace under /tmp stays visible).
    mounts: Sequence[dict[str, Any]] = ()
    # None: a fresh network namespace without any interface but lo.
    netns: Path | None = None
    tmp_mb: int = 256
    # The exec daemon needs one user namespace of its own (a PID namespace per command) and
    # then refuses more itself (sandboxd.py); /proc stays unmasked so it can mount a fresh one.
    daemon_user_namespace: bool = False


def bind(source: str | Path, destination: str, *, readonly: bool) -> dict[str, Any]:
    """A bind mount without set-uid programs or device files."""
    options = ["rbind", "nosuid", "nodev", "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": str(source), "options": options}


def system_mounts(*, tmp_mb: int) -> list[dict[str, Any]]:
    """/proc, /dev, a private /tmp, the host's system directories and the sandbox's /etc,
    read-only; the CA certificates of the host over the latter."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        # runc gives a tmpfs its mount point's mode: the skeleton's tmp is 1777 (rootfs_skeleton).
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", f"size={tmp_mb}m"]},
    ]
    for directory in HOST_SYSTEM_DIRS:
        host = Path(directory)
        if host.is_dir() and not host.is_symlink():
            mounts.append(bind(host, directory, readonly=True))
    mounts.append(bind(etc_dir(), "/etc", readonly=True))
    if Path("/etc/ssl/certs").is_dir():
        mounts.append(bind("/etc/ssl/certs", "/etc/ssl/certs", readonly=True))
    return mounts


def resources(*, memory_mb: int, cpus: float, pids: int) -> dict[str, Any]:
    limit = memory_mb * 1024 * 1024
    return {
        # swap = memory: the sandbox cannot escape its limit into swap.
        "memory": {"limit": limit, "swap": limit},
        "cpu": {"quota": int(cpus * CFS_PERIOD_US), "period": CFS_PERIOD_US},
        "pids": {"limit": pids},
    }


def cgroup_parent(instance: str | None = None) -> str:
    """The parent of an instance's sandbox cgroups (this agent's by default)."""
    return f"weldr-{instance or settings.INSTANCE_ID}"


def cgroup_path(name: str) -> str:
    return f"/{cgroup_parent()}/{name}"


def config(sandbox: SandboxConfig, *, rootfs: Path) -> dict[str, Any]:
    """The OCI config.json of a sandbox (pure: no I/O beyond looking at the host's /).

    Both kinds: own pid, mount, ipc, uts and network namespaces and no user namespace; a
    non-root uid without any capability and with noNewPrivileges; a read-only root; the
    seccomp profile; memory (and swap), CPU and pids limits in a cgroup of its own.
    """
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "mount", "ipc", "uts")]
    namespaces.append({"type": "network",
                       **({"path": str(sandbox.netns)} if sandbox.netns else {})})
    no_caps: dict[str, list[str]] = {
        kind: [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    userns = sandbox.daemon_user_namespace
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": sandbox.uid, "gid": sandbox.uid},
            "args": list(sandbox.args),
            "env": list(sandbox.env),
            "cwd": sandbox.cwd,
            "noNewPrivileges": True,
            "capabilities": no_caps,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": sandbox.hostname,
        "mounts": [*system_mounts(tmp_mb=sandbox.tmp_mb), *sandbox.mounts],
        "linux": {
            "namespaces": namespaces,
            # runc's default, spelled out for crun (whose default is rprivate): a warm sandbox's
            # workspace is bound on the host after the container exists and must propagate in.
            "rootfsPropagation": "rslave",
            "cgroupsPath": cgroup_path(sandbox.name),
            "resources": resources(memory_mb=sandbox.memory_mb, cpus=sandbox.cpus,
                                   pids=sandbox.pids),
            **hardening(mask_proc=not userns, user_namespaces=userns),
        },
    }


def rootfs_skeleton(rootfs: Path) -> None:
    """Mount points for the host's system directories and /etc; merged-/usr links stay links."""
    for directory in ("proc", "dev", "tmp", "etc"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    # The private /tmp tmpfs takes its mount point's mode, whatever its options say
    # (docs/sandbox.md).
    (rootfs / "tmp").chmod(0o1777)
    for directory in HOST_SYSTEM_DIRS:
        host, inside = Path(directory), rootfs / directory.lstrip("/")
        if host.is_symlink():
            if not inside.is_symlink():
                inside.symlink_to(host.readlink())
        elif host.is_dir():
            inside.mkdir(parents=True, exist_ok=True)


# The host names sandboxes get (exec: `sandbox`, previews: `preview`), resolved by their hosts.
SANDBOX_HOSTNAMES = HOSTNAMES


def hosts_path() -> Path:
    return etc_dir() / "hosts"


def hosts_file() -> Path:
    """Make sure the sandboxes' /etc (and its hosts file) exists; the hosts file's path."""
    sandbox_etc()
    return hosts_path()
