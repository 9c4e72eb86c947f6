"""The cache and buffer budget a mount gets, from the machine's and the mounts' share.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Budget:
    cache_size_mb: int
    buffer_size_mb: int


def budget(active: int) -> Budget:
    """Cache and buffer for a mount when `active` mounts (this one included) share the machine.

    Cache: the total minus the metadata and overhead reserves, split evenly. Buffer: a pool split
    evenly and clamped to [BUFFER_MIN_MB, BUFFER_MAX_MB]. CACHE_SIZE_MB / BUFFER_SIZE_MB override.
    """
    active = max(active, 1)
    if settings.CACHE_SIZE_MB is not None:
        cache = settings.CACHE_SIZE_MB
    else:
        spare = settings.CACHE_TOTAL_MB - settings.CACHE_RESERVED_META_MB \
            - settings.CACHE_RESERVED_OVERHEAD_MB
        cache = max(spare // active, 64)
    if settings.BUFFER_SIZE_MB is not None:
        buffer = settings.BUFFER_SIZE_MB
    else:
        buffer = min(max(settings.BUFFER_POOL_MB // active, settings.BUFFER_MIN_MB),
                     settings.BUFFER_MAX_MB)
    return Budget(cache_size_mb=cache, buffer_size_mb=buffer)


def free_space_ratio(volume_bytes: int) -> float:
    """The free-space ratio for a mount's cache on a volume of `volume_bytes`.

    Staging is bounded only by free space, down to free-space-ratio / 2 (storage hazard 5,
    docs/mounts.md). So the
    ratio is raised until half of it covers the metadata reserve: however much one mount
    stages, that much stays free for every bucket's metadata database and the other mounts'
    small writes. FREE_SPACE_RATIO is the floor.
    """
    if volume_bytes <= 0:
        return settings.FREE_SPACE_RATIO
    reserve = settings.CACHE_RESERVED_META_MB * 1024 * 1024
    needed = min(2 * reserve / volume_bytes, 0.5)
    return round(max(settings.FREE_SPACE_RATIO, needed), 3)
