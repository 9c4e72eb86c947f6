"""OCI runtime detection and the smallest bundle that proves a runtime starts a container.

crun is preferred; it fails on these machines ("cgroups in hybrid mode not supported"), so the
runtime is chosen by actually starting a container with each candidate (ENVIRONMENT.md).
"""

from __future__ import annotations

import json
import logging
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
