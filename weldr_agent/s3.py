"""S3 access with explicit credentials only, and the local S3 server used in development."""

from __future__ import annotations

import logging
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings

from weldr_agent import runner

logger = logging.getLogger("weldr.s3")


_session_lock = threading.Lock()


@lru_cache(maxsize=1)
def _session() -> boto3.session.Session:
    return boto3.session.Session()


def new_client(*args: Any, **kwargs: Any) -> Any:
    """A boto3 client of the agent's one session: clients of one session share its parsed
    service models (each client of a session of its own cost 12-15 MB here, #17). Creation is
    locked: a boto3 session is not safe to create clients from in parallel."""
    with _session_lock:
        return _session().client(*args, **kwargs)


@lru_cache(maxsize=8)
def _client(endpoint: str, region: str, key_id: str, secret: str) -> Any:
    # Keys are always given: boto3 must never walk its credential chain (it would probe the
    # instance metadata address). Path-style addressing works with every S3 server we meet.
    return new_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region if region != "auto" else "us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 2, "mode": "standard"},
            signature_version="s3v4",
        ),
    )


def client() -> Any:
    """A boto3 S3 client for the configured endpoint and keys."""
    return _client(settings.S3_ENDPOINT, settings.S3_REGION, settings.S3_ACCESS_KEY_ID,
                   settings.S3_SECRET_ACCESS_KEY)


def tool_env() -> dict[str, str]:
    """Environment for juicefs/litestream/rclone: explicit keys, nothing inherited.

    AWS_CA_BUNDLE is deliberately absent: Litestream 0.5.17 refuses to start an S3 replica
    when it is set (measured on these machines).
    """
    return runner.clean_env({
        "AWS_ACCESS_KEY_ID": settings.S3_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": settings.S3_SECRET_ACCESS_KEY,
        "AWS_REGION": settings.S3_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    })


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalS3Server:
    """`rclone serve s3` over a folder: the development S3 endpoint the agent supervises."""

    def __init__(self, *, root: Path, port: int, key_id: str, secret: str,
                 host: str = "127.0.0.1") -> None:
        self.root, self.port, self.host = root, port, host
        self.key_id, self.secret = key_id, secret
        self.process: runner.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        return [
            runner.tool("rclone"), "serve", "s3", str(self.root / "data"),
            "--addr", f"{self.host}:{self.port}", "--config", "/dev/null",
            "--vfs-cache-mode", "off", "--log-level", "NOTICE",
        ]

    def start(self, timeout: float = 20.0) -> None:
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is already in use; set S3_LOCAL_PORT")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        # The keys travel in the environment; rclone parses list-valued variables as CSV, so
        # the "key,secret" pair is quoted to stay one entry.
        env = runner.clean_env({"RCLONE_AUTH_KEY": f'"{self.key_id},{self.secret}"'})
        self.process = runner.spawn(self.argv(), log_path=self.root / "rclone-s3.log", env=env)
        if not runner.wait_until(lambda: port_open(self.host, self.port), timeout=timeout):
            self.stop()
            raise RuntimeError(f"local S3 server did not start; see {self.root / 'rclone-s3.log'}")
        logger.info("local S3 server on %s (data in %s)", self.endpoint, self.root / "data")

    def stop(self) -> None:
        if self.process is not None:
            runner.stop(self.process, grace=5)
            self.process = None
