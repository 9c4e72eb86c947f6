from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from weldr_agent import http_server, lifecycle, sse
from weldr_agent.s3 import LocalS3Server

logger = logging.getLogger("weldr.serve")

# Kept from SHUTDOWN_TIMEOUT_SECONDS for what follows the hooks: closing connections, stopping
# the supervised local S3 server and the process exit.
CLOSE_RESERVE_SECONDS = 3.0


class GracefulStop:
    """SIGTERM/SIGINT handling: the first signal starts the shutdown, a second exits at once.

    The first signal marks the agent as shutting down (new requests get 503 `shutting_down`
    while the HTTP server still answers), runs the shutdown hooks in a thread, then stops the
    reactor. See docs/shutdown.md.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline: float | None = None
        self.clean = True
        self.thread: threading.Thread | None = None

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.deadline is not None:
            os.write(2, f"second signal {signal.Signals(signum).name}: exiting now\n".encode())
            os._exit(128 + signum)
        logger.info("%s: shutting down (deadline %ss)", signal.Signals(signum).name,
                    self.timeout)
        self.begin()

    def begin(self) -> None:
        self.deadline = time.monotonic() + self.timeout
        lifecycle.begin_shutdown()
        self.thread = threading.Thread(target=self._run, name="shutdown", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from twisted.internet import reactor

        try:
            self.clean = lifecycle.shutdown(max(self.timeout - CLOSE_RESERVE_SECONDS, 1.0))
        finally:
            # Open event streams end cleanly (SSE bodies finish, websockets close with 4012)
            # just before the server stops listening: their clients reconnect to the next
            # agent with their last event id. Not earlier: until now new requests get 503,
            # and an EventSource that gets a 503 gives up for good.
            sse.streams_close(timeout=1.0)
            # Redis connections belong to the server's event loop: close them while it runs.
            loop = getattr(reactor, "_asyncioEventloop", None)
            if loop is not None:
                lifecycle.close_channel_layer(loop)
            reactor.callFromThread(_reactor_stop)

    def finish(self) -> bool:
        """After the server stopped: make sure the hooks ran (or run them now); True if clean."""
        if self.deadline is None:
            # The server stopped without a signal (an error): shut down all the same.
            self.deadline = time.monotonic() + self.timeout
            return lifecycle.shutdown(max(self.timeout - CLOSE_RESERVE_SECONDS, 1.0))
        assert self.thread is not None
        self.thread.join(max(self.deadline - time.monotonic(), 0))
        return self.clean and not self.thread.is_alive()


def _migrations_pending(alias: str) -> bool:
    """Whether `alias` lacks a migration: checked in milliseconds, where `migrate` with nothing
    to do still costs its post-migrate work (content types, permissions) at every start."""
    from django.db import connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[alias])
    return bool(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def _reactor_stop() -> None:
    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning

    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def _gc_freeze() -> None:
    """Leave what start-up made (Django, DRF, the routes, ~150k objects) out of every later
    garbage collection: a full collection traversed all of it, ~95 ms holding the GIL, and the
    first came in the first burst of requests (docs/previews.md, "Met since"). Young garbage
    goes first; the older start-up objects were found all but free of cycles (19 and 47
    collected)."""
    gc.collect(1)
    gc.freeze()


class Command(BaseCommand):
    help = (
        "Run the agent: migrate both databases, start the local S3 server when S3_ENDPOINT is "
        "unset, reconcile the machine, then serve HTTP and websockets with daphne on PORT. "
        "SIGTERM/SIGINT shut it down gracefully within SHUTDOWN_TIMEOUT_SECONDS (exit 0); a "
        "second signal exits at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0", help="Address to bind (default 0.0.0.0).")
        parser.add_argument("--port", type=int, default=None, help="Port (default: PORT).")

    def handle(self, *args: Any, host: str, port: int | None, **options: Any) -> None:
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        port = port or settings.PORT
        settings.WELDR_ENV_VOL.mkdir(parents=True, exist_ok=True)
        settings.WORKSPACE_BASE.mkdir(parents=True, exist_ok=True)
        for alias in settings.DATABASES:
            if _migrations_pending(alias):
                call_command("migrate", database=alias, interactive=False, verbosity=0)

        local_s3 = None
        if settings.S3_LOCAL:
            local_s3 = LocalS3Server(root=settings.S3_LOCAL_DIR, port=settings.S3_LOCAL_PORT,
                                     key_id=settings.S3_ACCESS_KEY_ID,
                                     secret=settings.S3_SECRET_ACCESS_KEY)
            local_s3.start()
        stop = GracefulStop(settings.SHUTDOWN_TIMEOUT_SECONDS)
        clean = False
        try:
            lifecycle.startup()
            # This thread now runs the server and touches no database: its pooled PostgreSQL
            # connection (migrations, start-up hooks) goes back to the pool.
            close_old_connections()
            from weldr_agent.asgi import application

            self._banner(host, port)
            http_server.cap_request_bodies()
            server = Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                signal_handlers=False,
                http_timeout=None,
                websocket_handshake_timeout=10,
                application_close_timeout=10,
                verbosity=0,
            )
            stop.install()
            _gc_freeze()
            server.run()
        finally:
            clean = stop.finish()
            lifecycle.close_connections()
            if local_s3 is not None:
                local_s3.stop()
            logger.info("agent stopped%s", "" if clean else " (with errors; see above)")
        if not clean:
            raise SystemExit(1)

    def _banner(self, host: str, port: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        supervised = " (local, supervised)" if settings.S3_LOCAL else ""
        lines = [
            f"Weldr Agent {settings.VERSION} ({settings.NODE_ENV})",
            f"  API      {base}/",
            f"  Docs     {base}/docs",
            f"  Health   {base}/health",
            f"  S3       {settings.S3_ENDPOINT}{supervised}",
            f"  Data     {settings.WELDR_ENV_VOL}",
            f"  Mode     {settings.WORKSPACE_MODE} workspaces",
            "  Token    .venv/bin/python manage.py create_api_token --name me",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
