"""Pure builders for command execution: the exec sandbox's OCI config and runtime argv.

Nothing here runs anything (STYLE.md: argv builders are pure and tested without a system).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from previews.oci import HOST_SYSTEM_DIRS, hardening, hosts_path

# Where things live inside the sandbox.
WORKSPACE = "/workspace"
CONTROL_DIR = "/run/weldr"
DAEMON_PATH = "/opt/weldr/sandboxd.py"
SOCKET_NAME = "sandboxd.sock"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"



def container_name(*, instance_id: str, bucket: str) -> str:
    """Machine-global, so it carries the instance id (two agents on one machine never collide)."""
    return f"weldr-{instance_id}-exec-{re.sub(r'[^a-z0-9-]', '-', bucket.lower())}"


def _bind(source: Path | str, destination: str, *, writable: bool) -> dict[str, Any]:
    options = ["rbind", "rw" if writable else "ro", "nosuid", "nodev"]
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": options}


def sandbox_spec(*, rootfs: Path, workspace: Path, control_dir: Path, daemon: Path, uid: int,
                 memory_mb: int, cpus: float, pids: int, hostname: str,
                 netns: Path | None = None) -> dict[str, Any]:
    """The exec sandbox: host system dirs read-only, the workspace read-write, a private /tmp,
    fresh namespaces (the network one from the preview sandbox's pool), a non-root uid without
    capabilities, and memory/CPU/pids limits. Its one process is the command daemon."""
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", f"size={max(64, memory_mb // 2)}m"]},
    ]
    for directory in HOST_SYSTEM_DIRS:
        if Path(directory).is_dir() and not Path(directory).is_symlink():
            mounts.append(_bind(directory, directory, writable=False))
    mounts += [
        _bind(hosts_path(), "/etc/hosts", writable=False),
        _bind(workspace, WORKSPACE, writable=True),
        _bind(control_dir, CONTROL_DIR, writable=True),
        _bind(daemon, DAEMON_PATH, writable=False),
    ]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": uid},
            # -I: ignore the environment and user site; -S: no site import (faster start).
            "args": ["/usr/bin/python3", "-I", "-S", DAEMON_PATH, f"{CONTROL_DIR}/{SOCKET_NAME}"],
            "env": [f"PATH={SANDBOX_PATH}", "LANG=C.UTF-8", "HOME=/tmp"],
            "cwd": WORKSPACE,
            "noNewPrivileges": True,
            "capabilities": {"bounding": [], "effective": [], "permitted": [],
                             "inheritable": [], "ambient": []},
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                *({"type": t} for t in ("pid", "mount", "ipc", "uts")),
                # The preview sandbox's pooled netns (veth + firewall: no agent, no host, no
                # other sandbox; outbound only with SANDBOX_OUTBOUND), or a fresh empty one.
                {"type": "network", **({"path": str(netns)} if netns else {})},
            ],
            "resources": {
                "memory": {"limit": memory_mb * 1024 * 1024},
                "pids": {"limit": pids},
                "cpu": {"period": 100_000, "quota": int(cpus * 100_000)},
            },
            **hardening(mask_proc=False),
        },
    }


def rootfs_mountpoints(rootfs: Path) -> list[Path]:
    """Directories and files the sandbox's read-only root must already contain."""
    return [rootfs / "workspace", rootfs / "run" / "weldr", rootfs / "opt" / "weldr",
            rootfs / "dev", rootfs / "proc", rootfs / "tmp"]


def runtime_argv(runtime: str, *, root: Path, verb: str, name: str,
                 bundle: Path | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """`runc --root R run -d --bundle B NAME`, `runc --root R delete --force NAME`, ..."""
    argv = [runtime, "--root", str(root), verb, *extra]
    if bundle is not None:
        argv += ["--bundle", str(bundle)]
    return [*argv, name]


def command_argv(command: str | list[str]) -> list[str]:
    """A string runs through `/bin/sh -c` (like a terminal); a list is the argv itself."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return list(command)


def command_env(extra: dict[str, str]) -> dict[str, str]:
    """A clean, explicit environment (never the agent's), with the caller's additions."""
    env = {"PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "USER": "sandbox"}
    env.update(extra)
    return env
