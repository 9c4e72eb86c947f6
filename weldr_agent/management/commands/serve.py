from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from weldr_agent import lifecycle
from weldr_agent.s3 import LocalS3Server

logger = logging.getLogger("weldr.serve")


class Command(BaseCommand):
    help = (
        "Run the agent: migrate both databases, start the local S3 server when S3_ENDPOINT is "
        "unset, reconcile the machine, then serve HTTP and websockets with daphne on PORT."
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
            call_command("migrate", database=alias, interactive=False, verbosity=0)

        local_s3 = None
        if settings.S3_LOCAL:
            local_s3 = LocalS3Server(root=settings.S3_LOCAL_DIR, port=settings.S3_LOCAL_PORT,
                                     key_id=settings.S3_ACCESS_KEY_ID,
                                     secret=settings.S3_SECRET_ACCESS_KEY)
            local_s3.start()
        try:
            lifecycle.startup()
            from weldr_agent.asgi import application

            self._banner(host, port)
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                signal_handlers=True,
                http_timeout=None,
                websocket_handshake_timeout=10,
                application_close_timeout=10,
                verbosity=0,
            ).run()
        finally:
            clean = lifecycle.shutdown(settings.SHUTDOWN_TIMEOUT_SECONDS)
            if local_s3 is not None:
                local_s3.stop()
            logger.info("agent stopped%s", "" if clean else " (with errors; see above)")

    def _banner(self, host: str, port: int) -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        lines = [
            f"Weldr Agent {settings.VERSION} ({settings.NODE_ENV})",
            f"  API      {base}/",
            f"  Docs     {base}/docs",
            f"  Health   {base}/health",
            f"  S3       {settings.S3_ENDPOINT}{' (local, supervised)' if settings.S3_LOCAL else ''}",
            f"  Data     {settings.WELDR_ENV_VOL}",
            "  Token    .venv/bin/python manage.py create_api_token --name me",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
