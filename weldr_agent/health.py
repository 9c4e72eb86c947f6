"""Dependency checks behind `GET /health`: each returns "ok" or a sentence saying what failed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connections

from weldr_agent import s3
from weldr_agent.routers import SHARED_DB, STATE_DB


def _database(alias: str) -> str:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # any driver error means "not usable"
        return f"{alias} database unreachable: {error}".strip()


def check_state_db() -> str:
    return _database(STATE_DB)


def check_shared_db() -> str:
    return _database(SHARED_DB)


async def _channel_roundtrip() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "no channel layer is configured"
    channel = await layer.new_channel("health.")
    token = secrets.token_hex(8)
    await layer.send(channel, {"type": "health.ping", "token": token})
    message = await layer.receive(channel)
    return "ok" if message.get("token") == token else "channel layer returned a wrong message"


def check_channel_layer() -> str:
    try:
        return async_to_sync(_channel_roundtrip)()
    except Exception as error:
        return f"channel layer unreachable: {error}"


def check_s3() -> str:
    try:
        s3.client().list_buckets()
        return "ok"
    except Exception as error:
        return f"S3 endpoint unreachable or credentials rejected: {error}"


def check_fuse() -> str:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
        return "ok"
    except OSError as error:
        return f"/dev/fuse is not usable: {error.strerror}"


def check_oci_runtime() -> str:
    from previews.oci import detector

    name = detector.detect()
    return "ok" if name else f"no OCI runtime starts a container: {detector.error}"


CHECKS: dict[str, Callable[[], str]] = {
    "state_db": check_state_db,
    "shared_db": check_shared_db,
    "channel_layer": check_channel_layer,
    "s3": check_s3,
    "fuse": check_fuse,
    "oci_runtime": check_oci_runtime,
}


def run_checks() -> dict[str, str]:
    return {name: check() for name, check in CHECKS.items()}
