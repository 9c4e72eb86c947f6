"""Unmount guards: the floors above mounts (previews, commands, forks) stop their users of a
bucket before it goes.

Every unmount, and the fencing of a bucket whose lease was lost, calls them all first; each
app registers its guard from its AppConfig.ready().
"""

from __future__ import annotations

from collections.abc import Callable

UnmountGuard = Callable[[str, bool], None]
registered: list[UnmountGuard] = []


def register_unmount_guard(fn: UnmountGuard) -> None:
    """Register fn(bucket, force): raise a ConflictError to refuse, or stop its things on force.

    Previews and exec register theirs in AppConfig.ready(); every unmount calls them all first.
    """
    if fn not in registered:
        registered.append(fn)
