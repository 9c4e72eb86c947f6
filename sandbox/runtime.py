"""OCI runtime detection: crun or runc, chosen by actually starting a container with each.

crun is preferred; it fails on some machines ("cgroups in hybrid mode not supported"), so a
probe container (`probe_spec()`, /bin/true in fresh namespaces) decides, and the choice is
re-proven at most every PROBE_TTL_SECONDS (docs/sandbox.md).
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

from sandbox.oci import HOST_SYSTEM_DIRS, rootfs_skeleton
from weldr_agent import runner

logger = logging.getLogger("weldr.oci")

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
        # None until the first probe: monotonic() counts from boot, so "0.0" would read as
        # fresh for the first PROBE_TTL_SECONDS after a boot and the agent would never probe.
        self._checked_at: float | None = None

    def candidates(self) -> tuple[str, ...]:
        if settings.OCI_RUNTIME == "auto":
            return ("crun", "runc")
        return (settings.OCI_RUNTIME,)

    def detect(self, *, force: bool = False) -> str | None:
        with self._lock:
            fresh = (self._checked_at is not None
                     and time.monotonic() - self._checked_at < PROBE_TTL_SECONDS)
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


def check_oci_runtime() -> str:
    """GET /health's `oci_runtime` check (registered in sandbox/apps.py)."""
    name = detector.detect()
    return "ok" if name else f"no OCI runtime starts a container: {detector.error}"
