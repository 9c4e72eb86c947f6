"""The /etc of every sandbox: a few generated files and copies, never the host's whole /etc.

The host's /etc is the host's: its users and groups, SSH host keys, every package's
configuration (database and cache servers, pip, npm and git settings that may hold tokens),
the machine id. A sandbox gets a directory of its own instead, built once by the agent (as
root, under RUNTIME_DIR: a tmpfs, so once per boot) and bound read-only at /etc:

- generated: passwd and group (root, the sandbox user `sandbox` at SANDBOX_UID, nobody),
  nsswitch.conf (files, and DNS for hosts), hosts (the sandbox's own host names resolve
  without DNS: git's default identity and getfqdn() otherwise wait ~10 s for a server a
  sandbox cannot reach);
- copied from the host: what the loader, the C library, TLS, time zones and Debian's
  /etc/alternatives links (awk, which, nodejs, ...) need for git, node, npm, python and sh
  to work; symlinks stay symlinks (they point into /usr);
- bound from the host on top, read-only: /etc/ssl/certs (the CA certificates; it changes with
  the host's ca-certificates package).
"""

from __future__ import annotations

import secrets
import shutil
import threading
from pathlib import Path

from django.conf import settings

# The host names sandboxes get (exec: `sandbox`, previews: `preview`).
HOSTNAMES = ("sandbox", "preview")
# Copied as they are (files, directories, symlinks as symlinks) when the host has them.
COPIED = ("alternatives", "ca-certificates.conf", "debian_version", "gai.conf", "host.conf",
          "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "mime.types",
          "os-release", "protocols", "services", "shells", "ssl/openssl.cnf", "timezone")
# Python's Debian configuration (sitecustomize.py is a link into it).
COPIED_GLOBS = ("python3*",)
# Mount points of what is bound from the host on top of the read-only copy.
BOUND = ("ssl/certs",)

_lock = threading.Lock()


def etc_dir() -> Path:
    return settings.RUNTIME_DIR / "etc"


def generated(uid: int) -> dict[str, str]:
    """The files written rather than copied (pure)."""
    names = " ".join(HOSTNAMES)
    return {
        "passwd": ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
                   f"sandbox:x:{uid}:{uid}:sandbox:/tmp:/bin/sh\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "group": f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n",
        "nsswitch.conf": ("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                          "networks: files\nprotocols: files\nservices: files\n"
                          "ethers: files\nrpc: files\n"),
        # Both families: a lookup that tries IPv6 first would otherwise go on to DNS.
        "hosts": (f"127.0.0.1\tlocalhost {names}\n"
                  f"::1\tlocalhost ip6-localhost ip6-loopback {names}\n"),
    }


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        target.symlink_to(source.readlink())
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    elif source.is_file():
        shutil.copyfile(source, target)


def build(target: Path, *, uid: int, host: Path = Path("/etc")) -> None:
    """Write a sandbox /etc into the new directory `target`."""
    target.mkdir(mode=0o755)
    for name, content in generated(uid).items():
        (target / name).write_text(content)
    for name in COPIED:
        _copy(host / name, target / name)
    for pattern in COPIED_GLOBS:
        for source in host.glob(pattern):
            _copy(source, target / source.name)
    # The resolver's configuration is often a link into /run (systemd-resolved): its content.
    resolv = host / "resolv.conf"
    if resolv.exists():
        (target / "resolv.conf").write_bytes(resolv.read_bytes())
    for name in BOUND:
        if (host / name).is_dir():
            (target / name).mkdir(parents=True, exist_ok=True)
    _readable(target)


def _readable(root: Path) -> None:
    """Everything root's and world-readable, nothing writable but by root (umask-proof)."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def sandbox_etc() -> Path:
    """The sandboxes' /etc, built on first use (staged, then renamed into place)."""
    target = etc_dir()
    with _lock:
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".etc-{secrets.token_hex(4)}")
        build(staging, uid=settings.SANDBOX_UID)
        try:
            staging.rename(target)
        except OSError:
            # Another agent sharing RUNTIME_DIR built it at the same time: theirs is as good.
            shutil.rmtree(staging, ignore_errors=True)
    return target
