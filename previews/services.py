"""Preview verbs: start, stop, list, logs, reconcile. They touch the DB, the sandbox and the proxy.

A started preview is a `Live` entry in this process: its sandbox, netns and port. Every way out
(stop, the app's exit, a failed start, agent restart) goes through `_teardown()`, which closes
the proxy, removes the container and netns and deletes the port lease, once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from previews import logs, system, workspaces
from previews.errors import (
    NoPreview,
    NoStartCommand,
    PortInUse,
    PreviewRunning,
)
from previews.leases import port_lease_acquire, port_lease_release
from previews.models import PortLease, Preview
from previews.proxy import NOT_YET, PortBusy, proxy
from sandbox import container, network, warm
from weldr_agent import runner

logger = logging.getLogger("weldr.previews")

# The watchers' connects to starting apps: one every READY_POLL_SECONDS in all (_poll_interval).
READY_POLL_SECONDS = 0.002
HOUSEKEEPING_SECONDS = 1.0
RECORDED_WAIT_SECONDS = 60.0


@dataclass
class Live:
    bucket: str
    port: int
    box: container.Container
    ns: network.Netns | None = None
    # Started from the warm pool (sandbox/warm.py): its slot is released with it.
    warm: warm.Warm | None = None
    stopping: bool = False
    torn_down: bool = False
    # Set by the watcher once the app answers: until then the proxy holds connections without
    # trying the app (previews/proxy.py).
    listening: bool = False
    launched: threading.Event = field(default_factory=threading.Event)
    # Set once the Preview row of this start is written (or its start failed).
    recorded: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def target(self) -> tuple[str, int] | None:
        """Where the proxy sends this port's connections (None until the app listens)."""
        return (self.ns.ip, self.port) if self.ns is not None and self.listening else None


_live: dict[str, Live] = {}
_live_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# A leased port the proxy listens on (the leases themselves: previews/leases.py)
# ---------------------------------------------------------------------------------------------

def _lease_and_listen(*, bucket: str, port: int | None, access: str, live_of) -> int:  # type: ignore[no-untyped-def]
    """A leased port the proxy listens on; a port something else holds is skipped."""
    skip: set[int] = set()
    while True:
        lease = port_lease_acquire(bucket=bucket, port=port, skip=skip)
        try:
            proxy.open(lease.port, target=lambda p=lease.port: live_of(p), bucket=bucket,
                       access=access)
            return lease.port
        except PortBusy:
            port_lease_release(bucket=bucket, port=lease.port)
            if port is not None:
                raise PortInUse(f"Port {port} is used by another program on this host.") from None
            skip.add(lease.port)


def _target(bucket: str, port: int) -> tuple[str, int] | None:
    with _live_lock:
        live = _live.get(bucket)
    if live is None or live.port != port:
        return None
    return live.target() or NOT_YET


# ---------------------------------------------------------------------------------------------
# Start
# ---------------------------------------------------------------------------------------------

def _start_command(workspace: Path) -> str:
    # Through the one door to workspace content: a symlinked package.json (to a host file,
    # /proc/self/environ) or a FIFO is never read.
    from mounts import workspace_fs
    from weldr_agent.errors import APIError

    try:
        raw = workspace_fs.read_if_present(workspace, "package.json", limit=1024 * 1024)
        package_json = raw.decode() if raw is not None else None
    except (OSError, UnicodeDecodeError, APIError):
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
    logs.log_rotate(system.log_path(bucket), max_bytes=0)
    # The sandbox's user must be able to write its workspace (npm install, build output).
    if workspace.stat().st_uid != settings.SANDBOX_UID:
        os.chown(workspace, settings.SANDBOX_UID, settings.SANDBOX_UID)


def _spec(*, bucket: str, workspace: Path, port: int, env: Mapping[str, str] | None,
          ns: network.Netns) -> container.Spec:
    return container.Spec(
        name=system.container_name(bucket), workspace=workspace,
        args=["/bin/sh", system.RUN_SCRIPT_INSIDE], env=system.app_env(port=port, env=env),
        netns=ns.path, hostname="preview",  # as a warm sandbox's (oci.SANDBOX_HOSTNAMES)
        binds=[(system.run_script_path(bucket), system.RUN_SCRIPT_INSIDE, True)],
    )


def _cold_box(bucket: str, workspace: Path) -> container.Container:
    # The full spec needs the netns, which `_launch` takes from the pool.
    spec = container.Spec(name=system.container_name(bucket), workspace=workspace, args=[])
    return container.Container(spec,
                               log_path=system.log_path(bucket), on_exit=_on_exit,
                               launcher=system.start_app_argv)


def preview_start(*, bucket: str, port: int | None = None, command: str | None = None,
                  env: Mapping[str, str] | None = None, access: str | None = None) -> Preview:
    """Lease a port, start the app's container and return its Preview (`starting`).

    `access` (default PREVIEW_ACCESS): `token` has the proxy let through only requests with a
    preview access token for this bucket and port (previews/tokens.py).

    With a warm sandbox (sandbox/warm.py) the app is started before the answer, in ~1 ms;
    otherwise a background thread makes its netns and container (`runc run`).
    """
    workspace = workspaces.workspace_path(bucket)
    command = command or _start_command(workspace)
    access = access or settings.PREVIEW_ACCESS
    port = _lease_and_listen(bucket=bucket, port=port, access=access,
                             live_of=lambda p: _target(bucket, p))
    ready = warm.warm_pool.take(workspace)
    box = ready.box if ready is not None else _cold_box(bucket, workspace)
    live = Live(bucket=bucket, port=port, box=box, warm=ready,
                ns=ready.ns if ready is not None else None)
    try:
        _prepare_files(bucket=bucket, command=command, workspace=workspace)
    except Exception:
        _teardown(live)
        raise
    with _live_lock:
        _live[bucket] = live
    # The app starts before its row is written: the row and the answer are ~10 ms that the
    # app's own start-up overlaps. Whatever ends it meanwhile waits for `recorded`.
    try:
        if ready is not None and _begin_warm(live, ready, workspace=workspace,
                                             command=command, env=env):
            target, args = _supervise, (live,)
        else:
            # Under ASGI every sync view shares one thread: twenty `runc run`s in a row on it
            # would serialise twenty starts.
            target, args = _launch, (live, workspace, env)
        threading.Thread(target=target, args=args, name=f"preview-{bucket}",
                         daemon=True).start()
        preview = _record_start(Preview(
            bucket=bucket, port=port, status=Preview.Status.STARTING, command=command,
            access=access, container=live.box.name, pid=live.box.pid if live.warm else None,
            exit_code=None, started_at=timezone.now(), ended_at=None))
    except Exception:
        live.recorded.set()
        if live.warm is not None:
            live.launched.set()
        _stop_live(live, status=Preview.Status.FAILED)
        raise
    live.recorded.set()
    return preview


def _record_start(preview: Preview) -> Preview:
    """The bucket's row says this start, in one statement (an upsert: the row of its last
    preview, if any, is overwritten; created_at stays)."""
    fields = [f.name for f in Preview._meta.concrete_fields
              if f.name not in ("id", "bucket", "created_at")]
    Preview.objects.bulk_create([preview], update_conflicts=True, unique_fields=["bucket"],
                                update_fields=fields)
    return preview


def _begin_warm(live: Live, ready: warm.Warm, *, workspace: Path, command: str,
                env: Mapping[str, str] | None) -> bool:
    """Start the app in its warm sandbox; False (the sandbox discarded) when that failed."""
    ready.box.on_exit = _on_exit
    try:
        # Its netns reached nothing while warm: now the bucket's egress policy.
        network.netns_pool.assign(ready.ns, bucket=live.bucket)
        warm.warm_pool.begin(ready, workspace=workspace,
                             env=system.app_env(port=live.port, env=env),
                             run_script=system.run_script(command),
                             log_path=system.log_path(live.bucket))
    except (OSError, runner.CommandError) as error:
        logger.warning("warm sandbox %s failed to start (%s); starting %s cold", ready.box.name,
                       error, live.bucket)
        # Unhooked first: its exit is not the preview's.
        ready.box.on_exit = None
        live.box, live.ns, live.warm = _cold_box(live.bucket, workspace), None, None
        ready.box.destroy()
        warm.warm_pool.release(ready)
        return False
    live.launched.set()
    return True


def _launch(live: Live, workspace: Path, env: Mapping[str, str] | None) -> None:
    """Start the container, then watch it; a container that cannot start is `failed`."""
    try:
        try:
            live.ns = network.netns_pool.acquire(bucket=live.bucket)
            live.box.spec = _spec(bucket=live.bucket, workspace=workspace, port=live.port,
                                  env=env, ns=live.ns)
            live.box.start()
        except Exception as error:
            logger.error("preview %s could not start: %s", live.bucket, error)
            _teardown(live)
            live.recorded.wait(RECORDED_WAIT_SECONDS)
            Preview.objects.filter(bucket=live.bucket, container=live.box.name).update(
                status=Preview.Status.FAILED, ended_at=timezone.now())
            return
        finally:
            live.launched.set()
        live.recorded.wait(RECORDED_WAIT_SECONDS)
        Preview.objects.filter(bucket=live.bucket, container=live.box.name).update(
            pid=live.box.pid)
        _watch(live)
    finally:
        connections.close_all()


def _supervise(live: Live) -> None:
    try:
        live.recorded.wait(RECORDED_WAIT_SECONDS)
        _watch(live)
    finally:
        connections.close_all()


def _port_answers(host: str, port: int) -> bool:
    # No create_connection(): its getaddrinfo() and timeouts cost more than the connect here.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _poll_interval(since_start: float) -> float:
    """How long the watcher of a starting app waits between two connects.

    All starting apps together try at most ~1/READY_POLL_SECONDS connects a second: one app
    alone is tried every 2 ms, twenty started at once each every 40 ms (each connect to a
    sandbox is a SYN and a reset through its veth, ~0.1 ms of the agent's CPU under load,
    which the twenty apps' own start-ups need). Slow starters are tried less often.
    """
    with _live_lock:
        starting = sum(1 for live in _live.values() if not live.listening)
    interval = READY_POLL_SECONDS * max(1, starting)
    return interval if since_start < 2 else max(interval, READY_POLL_SECONDS * 50)


def _ready(live: Live) -> None:
    """The app answers: held proxy connections go through, the row says `running`."""
    live.listening = True
    proxy.wake(live.port)
    Preview.objects.filter(bucket=live.bucket, container=live.box.name,
                           status=Preview.Status.STARTING).update(status=Preview.Status.RUNNING)


def _watch(live: Live) -> None:
    """`starting` -> `running` once the port answers; all along, keep the log under its cap."""
    assert live.ns is not None
    started = time.monotonic()
    rotated_at = started
    try:
        while live.box.running:
            now = time.monotonic()
            if now - rotated_at >= HOUSEKEEPING_SECONDS:
                logs.log_rotate(system.log_path(live.bucket),
                                max_bytes=settings.PREVIEW_LOG_MAX_BYTES)
                rotated_at = now
            if live.listening:
                live.box.wait(HOUSEKEEPING_SECONDS)
                continue
            if _port_answers(live.ns.ip, live.port):
                _ready(live)
            elif now - started > settings.PREVIEW_READY_TIMEOUT_SECONDS:
                logger.warning("preview %s did not answer on %s in time", live.bucket, live.port)
                _stop_live(live, status=Preview.Status.FAILED)
                return
            else:
                live.box.wait(_poll_interval(now - started))
    except Exception:
        logger.exception("watcher of preview %s failed", live.bucket)
        # Nothing will say the app listens now: held connections try its address themselves.
        live.listening = True
        proxy.wake(live.port)


def _on_exit(box: container.Container, code: int) -> None:
    """The container's init ended (reaper thread): record how, then tear everything down."""
    close_old_connections()
    with _live_lock:
        live = next((v for v in _live.values() if v.box is box), None)
    if live is not None:
        live.recorded.wait(RECORDED_WAIT_SECONDS)
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
    if live.warm is not None:
        warm.warm_pool.release(live.warm)
    elif live.ns is not None:
        network.netns_pool.release(live.ns)
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
    # A stop right after a start: let the start be recorded and `runc run` finish, then stop
    # what it started.
    live.recorded.wait(RECORDED_WAIT_SECONDS)
    live.launched.wait(120)
    binary, root = container.runtime()
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
            container.container_delete(preview.container)
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

def log_tail(*, bucket: str, lines: int) -> str:
    """The last `lines` lines of the bucket's app.log ('' when there is none)."""
    preview_get(bucket=bucket)
    return logs.last_lines(system.log_path(bucket), lines)


def preview_active(bucket: str) -> bool:
    return Preview.objects.filter(bucket=bucket, status__in=Preview.ACTIVE).exists()


# ---------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------

def previews_reconcile() -> None:
    """At start-up: nothing of a previous agent runs on, every lease is free again."""
    for name in container.containers():
        if name.startswith(system.container_name("")):
            container.container_delete(name)
    # Warm sandboxes a previous agent created or started (not this pool's own).
    warm.warm_pool.reset()
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
