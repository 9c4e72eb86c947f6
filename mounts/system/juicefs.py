"""JuiceFS: format and mount argv (its options live in `juicefs_mount_argv`, the one place
to change when tuning), the volume's settings without secrets, its staged blocks' keys.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from django.conf import settings

from mounts.system.image import JUICEFS_FUSE_OPTIONS
from mounts.system.memory import Budget
from mounts.system.tools import bucket_url
from mounts.system.volume import VOLUME_NAME, Paths

_STAGED_BLOCK = re.compile(r"^\d+_\d+_\d+$")
# The volume's settings (jfs_setting 'format') that hold object-storage credentials. EncryptKey
# (data encryption) is not one: removing it would make an encrypted volume unreadable.
FORMAT_SECRETS = ("AccessKey", "SecretKey", "SessionToken")


def format_without_secrets(fmt: dict[str, Any]) -> dict[str, Any]:
    """A volume's format settings without the S3 credentials an older agent let JuiceFS store.

    KeyEncrypted goes with them unless EncryptKey is still there (it is encrypted the same way).
    """
    cleaned = {key: value for key, value in fmt.items() if key not in FORMAT_SECRETS}
    if not cleaned.get("EncryptKey"):
        cleaned.pop("KeyEncrypted", None)
    return cleaned


def juicefs_format_argv(juicefs: str, p: Paths) -> list[str]:
    # --no-update: never change an existing volume's settings. `format` itself refuses a
    # non-empty prefix, the last guard against formatting over lost metadata.
    return [
        juicefs, "format", "--storage", "s3", "--bucket", bucket_url(p.bucket),
        "--trash-days", str(settings.TRASH_DAYS),
        # The bucket's footprint (docs/performance.md, "Bucket footprint"); fixed at format.
        "--compress", settings.JUICEFS_COMPRESSION,
        "--block-size", str(settings.JUICEFS_BLOCK_SIZE_KB),
        "--no-update", p.meta_url, VOLUME_NAME,
    ]


def verify_cache_value(value: str) -> str:
    """JuiceFS's checksum level for VERIFY_CACHE (design names sha256/md5/off)."""
    return {"off": "none", "none": "none", "sha256": "full", "md5": "full"}.get(value, value)


def juicefs_mount_argv(juicefs: str, p: Paths, b: Budget, *, free_ratio: float) -> list[str]:
    """`juicefs mount` in the foreground (we own its pid and its log) with the design's options.

    Every value comes from settings (the design's environment overrides); FS_MOUNT_OPTIONS is
    appended last so an operator's option wins.
    """
    argv = [
        juicefs, "mount", p.meta_url, str(p.volume_point),
        "--no-usage-report", "--no-syslog",
        # The endpoint is given at every mount so a changed S3_ENDPOINT is honoured.
        "--storage", "s3", "--bucket", bucket_url(p.bucket),
        "--cache-dir", str(p.cache_dir),
        "--cache-size", str(b.cache_size_mb),
        "--free-space-ratio", str(free_ratio),
        "--buffer-size", str(b.buffer_size_mb),
        "--attr-cache", str(settings.ATTR_CACHE_TTL),
        "--entry-cache", str(settings.ENTRY_CACHE_TTL),
        "--dir-entry-cache", str(settings.DIR_ENTRY_CACHE_TTL),
        "--open-cache", str(settings.OPEN_CACHE_TTL),
        "--max-readahead", str(settings.MAX_READAHEAD_MB),
        "--prefetch", str(settings.PREFETCH),
        "--verify-cache-checksum", verify_cache_value(settings.VERIFY_CACHE),
        "--max-uploads", str(settings.MAX_UPLOADS),
        # Litestream already ships the metadata continuously; the hourly full dump JuiceFS
        # does by default costs memory and CPU for nothing (storage hazard 7, docs/mounts.md).
        "--backup-meta", "0",
        # A private metrics port per mount: the default 9567 would collide between mounts.
        "--metrics", "127.0.0.1:0",
    ]
    if settings.WRITEBACK_ENABLED:
        argv += ["--writeback", "--upload-delay", settings.UPLOAD_DELAY]
    return argv + fuse_options_merge(shlex.split(settings.FS_MOUNT_OPTIONS))


def fuse_options_merge(extra: list[str]) -> list[str]:
    """`extra` with its FUSE options (`-o a,b`) joined to JUICEFS_FUSE_OPTIONS in one `-o`:
    juicefs keeps only the last `-o`, and an operator's must not drop nosuid,nodev."""
    options, rest, index = [JUICEFS_FUSE_OPTIONS], [], 0
    while index < len(extra):
        item = extra[index]
        if item == "-o" and index + 1 < len(extra):
            options.append(extra[index + 1])
            index += 2
            continue
        if item.startswith("-o="):
            options.append(item[len("-o="):])
        else:
            rest.append(item)
        index += 1
    return [*rest, "-o", ",".join(options)]


def staged_block_key(cache_dir: Path, staged: Path) -> str | None:
    """The object key of a staged block file, or None when it is not one.

    Staged blocks live at <cache-dir>/<uuid>/rawstaging/<key> where <key> is the block's key
    relative to the volume prefix (chunks/0/0/123_0_4096); with compression off the file is
    the object byte for byte.
    """
    try:
        relative = staged.relative_to(cache_dir)
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) < 4 or parts[1] != "rawstaging" or not _STAGED_BLOCK.match(parts[-1]):
        return None
    return f"{VOLUME_NAME}/" + "/".join(parts[2:])


# Where the zero-RPO sync puts the compressed copies of staged blocks before putting them into
# S3: a folder of the mount's cache folder, beside JuiceFS's own (never under */rawstaging).
ENCODED_DIR = "weldr-encoded"
# Staged blocks per zstd run (one process compresses a batch; argv stays short).
ZSTD_BATCH = 256


def config_compression(raw: bytes) -> str:
    """The object compression named in a JuiceFS mount's `.config` ("none" when unset)."""
    config = json.loads(raw)
    value = (config.get("Format") or {}).get("Compression") if isinstance(config, dict) else None
    return str(value or "none").lower()


def zstd_argv(files: list[Path], out_dir: Path) -> list[str]:
    # -1: JuiceFS's own level (pkg/compress: ZSTD_LEVEL = 1, "fastest"). Standard frames with
    # the content size, which JuiceFS's decoder (DataDog/zstd) reads like its own.
    return ["zstd", "-1", "-q", "-f", "--output-dir-flat", str(out_dir), "--",
            *[str(file) for file in files]]


def zstd_name(staged: Path) -> str:
    """The name zstd gives the compressed copy of a staged block in ENCODED_DIR."""
    return f"{staged.name}.zst"
