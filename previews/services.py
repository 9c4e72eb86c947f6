"""Preview verbs: start, stop, list, logs, reconcile. They touch the DB, the sandbox and the proxy.

A started preview is a `Live` entry in this process: its sandbox, netns and port. Every way out
(stop, the app's exit, a failed start, agent restart) goes through `_teardown()`, which closes
the proxy, removes the container and netns and deletes the port lease, once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.utils import timezone

from previews import sandbox, system, workspaces
from previews.errors import (
    NoFreePort,
    NoPreview,
    NoStartCommand,
    PortInUse,
    PreviewExists,
    PreviewRunning,
)
from previews.models import PortLease, Preview
from previews.proxy import PortBusy, proxy
from weldr_agent import runner

logger = logging.getLogger("weldr.previews")

READY_POLL_SECONDS = 0.01
HOUSEKEEPING_SECONDS = 1.0


@dataclass
class Live:
    bucket: str
    port: int
    box: sandbox.Sandbox
    ns: sandbox.Netns | None = None
    stopping: bool = False
    torn_down: bool = False
    launched: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def target(self) -> tuple[str, int] | None:
        """Where the proxy sends this port's connections (None until the netns is there)."""
        return (self.ns.ip, self.port) if self.ns is not None else None


_live: dict[str, Live] = {}
_live_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Port leases: the database decides, never a look-then-write
# ---------------------------------------------------------------------------------------------

def port_lease_acquire(*, bucket: str, port: int | None, skip: set[int]) -> PortLease:
    """Lease `port`, or the first free port of 3000-3019; one lease per bucket."""
    wanted = [port] if port is not None else [
        p for p in range(settings.PREVIEW_PORT_MIN, settings.PREVIEW_PORT_MAX + 1)
        if p not in skip
    ]
    for candidate in wanted:
        try:
            with transaction.atomic(using="default"):
                return PortLease.objects.create(port=candidate, bucket=bucket)
        except IntegrityError:
            # Which constraint failed decides the error; the insert itself was the check.
            if PortLease.objects.filter(bucket=bucket).exists():
                raise PreviewExists() from None
    if port is not None:
        raise PortInUse()
    raise NoFreePort()


def port_lease_release(*, bucket: str, port: int) -> None:
    PortLease.objects.filter(bucket=bucket, port=port).delete()


def _lease_and_listen(*, bucket: str, port: int | None, live_of) -> int:  # type: ignore[no-untyped-def]
    """A leased port the proxy listens on; a port something else holds is skipped."""
    skip: set[int] = set()
    while True:
        lease = port_lease_acquire(bucket=bucket, port=port, skip=skip)
        try:
            proxy.open(lease.port, target=lambda p=lease.port: live_of(p))
            return lease.port
        except PortBusy:
            port_lease_release(bucket=bucket, port=lease.port)
            if port is not None:
                raise PortInUse(f"Port {port} is used by another program on this host.") from None
            skip.add(lease.port)


def _target(bucket: str, port: int) -> tuple[str, int] | None:
    with _live_lock:
        live = _live.get(bucket)
    return live.target() if live is not None and live.port == port else None


# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------

def _start_command(workspace: Path) -> str:
    try:
        package_json = (workspace / "package.json").read_text()
    except (OSError, UnicodeDecodeError):
        package_json = None
    command = system.start_command(package_json)
    if command is None:
        raise NoStartCommand()
    return command


def _prepare_files(*, bucket: str, command: str, workspace: Path) -> None:
    """run.sh and a rotated app.log under WELDR_ENV_VOL/apps/{bucket}; a writable workspace."""
    directory = system.app_dir(bucket)
    directory.mkdir(parents=True, exist_ok=True)
    script = system.run_script_path(bucket)
    script.write_text(system.run_script(command))
    script.chmod(0o755)
    log_rotate(system.log_path(bucket), max_bytes=0)
    # The sandbox's user must be able to write its workspace (npm install, build output).
    if workspace.stat().st_uid != settings.SANDBOX_UID:
        os.chown(workspace, settings.SANDBOX_UID, settings.SANDBOX_UID)


def _spec(*, bucket: str, workspace: Path, port: int, env: Mapping[str, str] | None,
          ns: sandbox.Netns) -> sandbox.Spec:
    return sandbox.Spec(
        name=system.container_name(bucket), workspace=workspace,
        args=["/bin/sh", system.RUN_SCRIPT_INSIDE], env=system.app_env(port=port, env=env),
        netns=ns.path, hostname=f"preview-{bucket}"[:63],
        binds=[(system.run_script_path(bucket), system.RUN_SCRIPT_INSIDE, True)],
    )


def preview_start(*, bucket: str, port: int | None = None, command: str | None = None,
                  env: Mapping[str, str] | None = None) -> Preview:
    """Lease a port, start the app's container and return its Preview (`starting`)."""
    workspace = workspaces.workspace_path(bucket)
    command = command or _start_command(workspace)
    port = _lease_and_listen(bucket=bucket, port=port,
                             live_of=lambda p: _target(bucket, p))
    # The full spec needs the netns, which `_launch` takes from the pool.
    box = sandbox.Sandbox(sandbox.Spec(name=system.container_name(bucket), workspace=workspace,
                                       args=[]),
                          log_path=system.log_path(bucket), on_exit=_on_exit,
                          launcher=system.start_app_argv)
    live = Live(bucket=bucket, port=port, box=box)
    try:
        _prepare_files(bucket=bucket, command=command, workspace=workspace)
        Preview.objects.update_or_create(bucket=bucket, defaults={
            "port": port, "status": Preview.Status.STARTING, "command": command,
            "container": box.name, "pid": None, "exit_code": None,
            "started_at": timezone.now(), "ended_at": None,
        })
    except Exception:
        _teardown(live)
        raise
    with _live_lock:
        _live[bucket] = live
    # The netns and container are made off the request thread: under ASGI every sync view
    # shares one thread, and twenty `runc run`s in a row would serialise twenty starts.
    threading.Thread(target=_launch, args=(live, workspace, env), name=f"preview-{bucket}",
                     daemon=True).start()
    return Preview.objects.get(bucket=bucket)


def _launch(live: Live, workspace: Path, env: Mapping[str, str] | None) -> None:
    """Start the container, then watch it; a container that cannot start is `failed`."""
    try:
        try:
            live.ns = sandbox.pool.acquire()
            live.box.spec = _spec(bucket=live.bucket, workspace=workspace, port=live.port,
                                  env=env, ns=live.ns)
            live.box.start()
        except Exception as error:
            logger.error("preview %s could not start: %s", live.bucket, error)
            _teardown(live)
            Preview.objects.filter(bucket=live.bucket, container=live.box.name).update(
                status=Preview.Status.FAILED, ended_at=timezone.now())
            return
        finally:
            live.launched.set()
        Preview.objects.filter(bucket=live.bucket, container=live.box.name).update(
            pid=live.box.pid)
        _watch(live)
    finally:
        connections.close_all()


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _watch(live: Live) -> None:
    """`starting` -> `running` once the port answers; then keep the log under its cap."""
    try:
        deadline = time.monotonic() + settings.PREVIEW_READY_TIMEOUT_SECONDS
        assert live.ns is not None
        while live.box.running and not _port_answers(live.ns.ip, live.port):
            if time.monotonic() > deadline:
                logger.warning("preview %s did not answer on %s in time", live.bucket, live.port)
                _stop_live(live, status=Preview.Status.FAILED)
                return
            time.sleep(READY_POLL_SECONDS)
        if live.box.running:
            Preview.objects.filter(bucket=live.bucket, container=live.box.name,
                                   status=Preview.Status.STARTING).update(
                status=Preview.Status.RUNNING)
        while live.box.running:
            log_rotate(system.log_path(live.bucket), max_bytes=settings.PREVIEW_LOG_MAX_BYTES)
            live.box.wait(HOUSEKEEPING_SECONDS)
    except Exception:
        logger.exception("watcher of preview %s failed", live.bucket)


def _on_exit(box: sandbox.Sandbox, code: int) -> None:
    """The container's init ended (reaper thread): record how, then tear everything down."""
    close_old_connections()
    with _live_lock:
        live = next((v for v in _live.values() if v.box is box), None)
    try:
        if live is not None and not live.stopping:
            # Everything is released before the status says the app ended.
            _teardown(live)
            status = Preview.Status.EXITED if code == 0 else Preview.Status.FAILED
            Preview.objects.filter(bucket=live.bucket, container=box.name).exclude(
                status=Preview.Status.STOPPED).update(status=status, exit_code=code,
                                                      ended_at=timezone.now())
        elif live is not None:
            Preview.objects.filter(bucket=live.bucket, container=box.name).update(exit_code=code)
    finally:
        connections.close_all()


def _teardown(live: Live) -> None:
    """Close the port, remove the container and netns, release the lease. Once."""
    with live.lock:
        if live.torn_down:
            return
        live.torn_down = True
    proxy.close(live.port)
    live.box.destroy()
    if live.ns is not None:
        sandbox.pool.release(live.ns)
    port_lease_release(bucket=live.bucket, port=live.port)
    with _live_lock:
        if _live.get(live.bucket) is live:
            del _live[live.bucket]


# ---------------------------------------------------------------------------------------------
# Stop
# ---------------------------------------------------------------------------------------------

def _stop_live(live: Live, *, status: str = Preview.Status.STOPPED,
               grace: float | None = None) -> None:
    grace = settings.PREVIEW_STOP_GRACE_SECONDS if grace is None else grace
    live.stopping = True
    # A stop right after a start: let `runc run` finish, then stop what it started.
    live.launched.wait(120)
    binary, root = sandbox.runtime()
    argv = system.stop_app_argv(binary=binary, root=root, name=live.box.name, grace=int(grace))
    try:
        runner.run(argv, timeout=grace + 60)
    except runner.CommandError:
        logger.exception("stop-app.sh failed for %s; killing the container directly", live.bucket)
        live.box.signal(signal.SIGKILL)
    live.box.wait(30)
    _teardown(live)
    Preview.objects.filter(bucket=live.bucket, container=live.box.name).update(
        status=status, ended_at=timezone.now())


def preview_stop(*, bucket: str, grace: float | None = None) -> Preview:
    """Stop the bucket's app (SIGTERM, grace, SIGKILL) and free everything; idempotent."""
    preview = Preview.objects.filter(bucket=bucket).first()
    if preview is None:
        raise NoPreview()
    with _live_lock:
        live = _live.get(bucket)
    if live is not None:
        _stop_live(live, grace=grace)
    else:
        # Nothing of ours runs it (a start that died half-way): make sure nothing is left.
        if preview.container:
            sandbox.container_delete(preview.container)
        PortLease.objects.filter(bucket=bucket).delete()
    Preview.objects.filter(bucket=bucket).update(
        status=Preview.Status.STOPPED, ended_at=preview.ended_at or timezone.now())
    return Preview.objects.get(bucket=bucket)


def preview_get(*, bucket: str) -> Preview:
    preview = Preview.objects.filter(bucket=bucket).first()
    if preview is None:
        raise NoPreview()
    return preview


def preview_list() -> list[Preview]:
    return list(Preview.objects.order_by("bucket"))


def unmount_guard(bucket: str, force: bool) -> None:
    """Called by the mounts app before unmounting: a running preview blocks it unless forced."""
    if not Preview.objects.filter(bucket=bucket, status__in=Preview.ACTIVE).exists():
        return
    if not force:
        raise PreviewRunning()
    preview_stop(bucket=bucket)


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------

def log_rotate(path: Path, *, max_bytes: int) -> bool:
    """Copy-truncate `path` to `path.1` when it is larger than `max_bytes`.

    The container holds the log open with O_APPEND, so truncating in place is safe: its next
    write lands at the new end.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size <= max_bytes or size == 0:
        return False
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return True


def log_tail(*, bucket: str, lines: int) -> str:
    """The last `lines` lines of the bucket's app.log ('' when there is none)."""
    preview_get(bucket=bucket)
    path = system.log_path(bucket)
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            end = log.tell()
            chunk, data = 64 * 1024, b""
            while end > 0 and data.count(b"\n") <= lines:
                start = max(0, end - chunk)
                log.seek(start)
                data = log.read(end - start) + data
                end = start
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")


def preview_active(bucket: str) -> bool:
    return Preview.objects.filter(bucket=bucket, status__in=Preview.ACTIVE).exists()


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------

def previews_reconcile() -> None:
    """At start-up: nothing of a previous agent runs on, every lease is free again."""
    for name in sandbox.containers():
        if name.startswith(system.container_name("")):
            sandbox.container_delete(name)
    PortLease.objects.all().delete()
    Preview.objects.filter(status__in=Preview.ACTIVE).update(
        status=Preview.Status.STOPPED, ended_at=timezone.now())


def previews_stop_all(deadline: float) -> None:
    """At shutdown: stop every preview, within the deadline."""
    with _live_lock:
        lives = list(_live.values())
    threads = []
    for live in lives:
        grace = max(0.0, min(settings.PREVIEW_STOP_GRACE_SECONDS,
                             deadline - time.monotonic() - 2))
        thread = threading.Thread(target=_stop_live, args=(live,), kwargs={"grace": grace})
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
