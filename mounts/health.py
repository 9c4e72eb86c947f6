"""What mounts adds to GET /health (weldr_agent/health.py): FUSE, loop devices, the mount count."""

from __future__ import annotations

import os

from rest_framework import serializers

from weldr_agent import health


def check_fuse() -> str:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
        return "ok"
    except OSError as error:
        return f"/dev/fuse is not usable: {error.strerror}"


def check_loop_devices() -> str:
    from mounts import capabilities

    reason = capabilities.loop_devices()
    if reason == capabilities.OK:
        return "ok"
    return f"{reason}: the image layout is off; new volumes get the files layout"


def register() -> None:
    from mounts.models import Mount

    health.check_register("fuse", check_fuse)
    health.check_register("loop_devices", check_loop_devices, required=False)
    health.figure_register(
        "mounts", health.figure_count(lambda: Mount.objects.filter(status="mounted")),
        field=serializers.IntegerField())
