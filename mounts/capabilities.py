"""What this machine offers the mount path beyond the required dependencies: loop devices.

The `image` layout loop-mounts an ext4 image (docs/mounts.md, "Layouts"), so it needs a loop
device; the `files` layout does not. Whether a platform offers loop devices is not a given (a
container without /dev/loop-control, a VM whose kernel has no loop driver), so the agent asks
the kernel instead of assuming: where none can be had it still works, with the `files` layout
only (docs/mounts.md, "Where loop devices are missing").
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOOP_CONTROL = Path("/dev/loop-control")
# <linux/loop.h>: LOOP_CTL_GET_FREE, the number of an unbound loop device (the kernel adds one
# when none is free). It binds nothing: the device stays free for whoever opens it next.
LOOP_CTL_GET_FREE = 0x4C82
OK = "ok"


def loop_devices() -> str:
    """`ok` when a loop device can be had here, else a sentence saying why not.

    The same steps as `losetup --find` (which attaches the image layout's image): open
    /dev/loop-control, ask it for a free device, open that device read-write. /dev/loop-control
    is required, not merely existing /dev/loopN nodes: without it the kernel cannot add devices,
    and a fixed handful would run out with a few mounts (or be taken by someone else).
    """
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"{LOOP_CONTROL} is not usable: {error.strerror}"
    try:
        number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
    except OSError as error:
        return f"{LOOP_CONTROL} gives no free loop device: {error.strerror}"
    finally:
        os.close(control)
    device = Path(f"/dev/loop{number}")
    try:
        os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
    except OSError as error:
        return f"the free loop device {device} cannot be opened: {error.strerror}"
    return OK


def image_layout_available() -> bool:
    return loop_devices() == OK
