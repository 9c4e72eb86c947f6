"""S3, the mounts (JuiceFS + Litestream) and the workspaces (a mount per bucket, or local
branch directories).
"""

from __future__ import annotations

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from weldr_agent import localstore
from weldr_agent.settings.core import PRODUCTION, WELDR_ENV_VOL
from weldr_agent.settings.parse import (
    boolean,
    choice,
    duration,
    env,
    integer,
    number,
    optional_integer,
)

# ---------------------------------------------------------------------------------------------
# S3 (Tigris in production; a local rclone S3 server in development when S3_ENDPOINT is unset)
# ---------------------------------------------------------------------------------------------

S3_REGION = env.str("S3_REGION", default="auto")
S3_LOCAL_PORT = integer("S3_LOCAL_PORT", 8333, low=1, high=65535)
S3_ENDPOINT = env.str("S3_ENDPOINT", default="https://fly.storage.tigris.dev" if PRODUCTION else "")
# True when the agent runs its own S3 server (rclone serve s3) and supervises it.
S3_LOCAL = not S3_ENDPOINT
S3_LOCAL_DIR = WELDR_ENV_VOL / "local-s3"
if S3_LOCAL:
    S3_ENDPOINT = f"http://127.0.0.1:{S3_LOCAL_PORT}"
if not re.match(r"^https?://[^\s/]+", S3_ENDPOINT):
    raise ImproperlyConfigured(f"S3_ENDPOINT must be an http(s) URL; got {S3_ENDPOINT!r}.")
S3_ENDPOINT = S3_ENDPOINT.rstrip("/")
S3_ACCESS_KEY_ID = env.str("S3_ACCESS_KEY_ID", default="")
S3_SECRET_ACCESS_KEY = env.str("S3_SECRET_ACCESS_KEY", default="")
if S3_LOCAL and not (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY):
    S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY = localstore.local_s3_keys(S3_LOCAL_DIR)
if not (S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must both be set.")

# ---------------------------------------------------------------------------------------------
# Mounts (JuiceFS + Litestream); names follow the design document
# ---------------------------------------------------------------------------------------------

MAX_MOUNTS = integer("MAX_MOUNTS", 5, low=1, high=50)
FS_MOUNT_OPTIONS = env.str("FS_MOUNT_OPTIONS", default="")
# Budget the design distributes across active mounts (MB).
CACHE_TOTAL_MB = integer("CACHE_TOTAL_MB", 4096, low=256, high=10**7)
CACHE_RESERVED_META_MB = integer("CACHE_RESERVED_META_MB", 1024, low=0, high=10**6)
CACHE_RESERVED_OVERHEAD_MB = integer("CACHE_RESERVED_OVERHEAD_MB", 500, low=0, high=10**6)
# JuiceFS's read/write buffer per mount (storage hazard 7, docs/mounts.md). With writeback a
# block stays in it only until it is in the staging folder: five image mounts written at full
# speed at once used 112 MiB of buffers in all (docs/performance.md, "Mounts: memory"), and the
# workspace benchmark runs as fast with 32 MB as with 80–128. The Go heap a server keeps at rest
# follows its GOMEMLIMIT (buffer + JUICEFS_MEMORY_OVERHEAD_MB), so a smaller buffer is what keeps
# 5 mounts + the agent within 600 MB: 64 MB for the first two mounts, 32 with five.
BUFFER_POOL_MB = integer("BUFFER_POOL_MB", 160, low=32, high=10**6)
BUFFER_MIN_MB = integer("BUFFER_MIN_MB", 32, low=32, high=10**5)
BUFFER_MAX_MB = integer("BUFFER_MAX_MB", 64, low=32, high=10**5)
# Explicit overrides (unset means "computed from the budget").
CACHE_SIZE_MB = optional_integer("CACHE_SIZE_MB", low=1, high=10**8)
BUFFER_SIZE_MB = optional_integer("BUFFER_SIZE_MB", low=32, high=10**6)
FREE_SPACE_RATIO = number("FREE_SPACE_RATIO", 0.01, low=0.0, high=0.9)
ATTR_CACHE_TTL = integer("ATTR_CACHE_TTL", 300, low=0, high=86400)
ENTRY_CACHE_TTL = integer("ENTRY_CACHE_TTL", 300, low=0, high=86400)
DIR_ENTRY_CACHE_TTL = integer("DIR_ENTRY_CACHE_TTL", 300, low=0, high=86400)
OPEN_CACHE_TTL = integer("OPEN_CACHE_TTL", 0, low=0, high=86400)
MAX_READAHEAD_MB = integer("MAX_READAHEAD_MB", 32, low=1, high=4096)
PREFETCH = integer("PREFETCH", 1, low=0, high=100)
VERIFY_CACHE = choice("VERIFY_CACHE", env.str("VERIFY_CACHE", default="off"),
                       ("off", "none", "sha256", "md5", "full", "shrink"))
WRITEBACK_ENABLED = boolean("WRITEBACK_ENABLED", default=True)
UPLOAD_DELAY = duration("UPLOAD_DELAY", "5m")
MAX_UPLOADS = integer("MAX_UPLOADS", 5, low=1, high=200)
# Days JuiceFS keeps deleted files and overwritten slices (format time). Nothing of the agent's
# needs more than a day: a restore goes back at most UPLOAD_DELAY + RESTORE_MARGIN_SECONDS, its
# fallback at most LITESTREAM_RETENTION; every day kept is a day of overwritten data the user
# pays for (docs/performance.md, "Bucket footprint"). JuiceFS counts in whole days.
TRASH_DAYS = integer("TRASH_DAYS", 1, low=0, high=365)
# Bucket footprint, fixed when a volume is formatted: JuiceFS's object compression and block
# size. JuiceFS's compaction of an image workspace's chunks writes the holes between scattered
# writes as zeros, and ext4's metadata and source code compress well: zstd. Not lz4: the zero-RPO
# sync puts staged blocks into S3 itself, encoded as JuiceFS would, and can only encode zstd.
JUICEFS_COMPRESSION = choice("JUICEFS_COMPRESSION",
                             env.str("JUICEFS_COMPRESSION", default="zstd"), ("none", "zstd"))
JUICEFS_BLOCK_SIZE_KB = integer("JUICEFS_BLOCK_SIZE_KB", 4096, low=64, high=16384)
LITESTREAM_SYNC_INTERVAL = duration("LITESTREAM_SYNC_INTERVAL", "10s")
LITESTREAM_SNAPSHOT_INTERVAL = duration("LITESTREAM_SNAPSHOT_INTERVAL", "1h")
LITESTREAM_RETENTION = duration("LITESTREAM_RETENTION", "4h")
MOUNT_TIMEOUT_SECONDS = integer("MOUNT_TIMEOUT_SECONDS", 120, low=5, high=3600)
# Metadata restored after a machine loss is taken from this long before now − UPLOAD_DELAY (or
# from the last zero-RPO sync, whichever is later), so that every block it names was uploaded.
RESTORE_MARGIN_SECONDS = integer("RESTORE_MARGIN_SECONDS", 60, low=0, high=86400)
# Go heap soft limits (storage hazard 7, docs/mounts.md): juicefs gets its buffer plus this much,
# litestream a fixed amount. GOMEMLIMIT makes the Go runtime collect harder instead of growing
# past it, and its scavenger hands idle heap back to the kernel down to it: a JuiceFS server
# keeps about its limit for minutes after a burst of writes (measured 150 s after: limit 192 MiB
# → ~95 MiB anonymous, 64 MiB → ~49; its pooled buffers are freed by the second idle collection
# and taken again by the upload UPLOAD_DELAY after the writes: ~26 MiB ten minutes after).
# 32 MB above the buffer is the heap at rest with room to spare.
JUICEFS_MEMORY_OVERHEAD_MB = integer("JUICEFS_MEMORY_OVERHEAD_MB", 32, low=16, high=10**5)
LITESTREAM_MEMORY_LIMIT_MB = integer("LITESTREAM_MEMORY_LIMIT_MB", 32, low=8, high=10**5)
# JuiceFS run as root sets its own oom_score_adj to -1000 (never killed: the kernel kills the
# agent or a preview instead, however large JuiceFS grows). Set back to this after it mounts:
# still protected at its normal size, killable when it takes half the machine more than others.
JUICEFS_OOM_SCORE_ADJ = integer("JUICEFS_OOM_SCORE_ADJ", -500, low=-1000, high=1000)
# Each mount's JuiceFS runs in a memory cgroup of its own limited to this many MB (cgroup v1's
# memory hierarchy; 0: not confined): its heap (GOMEMLIMIT above) and the page cache of the
# blocks it stages and caches. Unconfined, every new staging block takes fresh pages from the
# machine, and on a VM that hands its free memory back to the host (virtio-balloon free page
# reporting, as on these machines) touching a fresh 2 MiB page-cache folio costs ~30 ms: a
# snapshot with 50 MB unflushed took 620–716 ms. Within the limit JuiceFS reuses the pages it
# reclaims: 252–278 ms (docs/snapshots.md, "Fresh memory").
JUICEFS_MEMORY_CGROUP_MB = integer("JUICEFS_MEMORY_CGROUP_MB", 512, low=0, high=10**6)
# JuiceFS's watchdog: a second process per mount (same binary) that restarts a crashed or hung
# server on the same FUSE connection, so the workspace survives it. It costs ~15 MiB of heap
# and its share of the binary per mount (~20 MiB PSS; 5 mounts: ~85 MiB, docs/performance.md,
# "Mounts: memory"). Without it (0) a crashed server is a dead mount: the image's ext4 goes
# read-only and reconcile or the next POST /mounts mounts it again (writes since the last sync
# may be lost, as after any crash).
JUICEFS_WATCHDOG = boolean("JUICEFS_WATCHDOG", default=True)
# Workspace layout of NEW volumes (docs/mounts.md, "Layouts"): `files` (the workspace is the
# JuiceFS mount) or `image` (an ext4 image inside the JuiceFS volume, loop-mounted). An existing
# volume always keeps its own layout, whatever this says. `image` by default: the coding workload
# runs at local-disk speed on it, 15-50x slower on `files` (docs/performance.md).
WORKSPACE_LAYOUT = choice("WORKSPACE_LAYOUT", env.str("WORKSPACE_LAYOUT", default="image"),
                           ("files", "image"))
# Size of a new image (sparse: only what is written costs space); fixed at creation.
WORKSPACE_IMAGE_SIZE_GB = integer("WORKSPACE_IMAGE_SIZE_GB", 20, low=1, high=16384)
# Loop device over the image with O_DIRECT on the backing file (docs/performance.md measures it).
WORKSPACE_IMAGE_DIRECT_IO = boolean("WORKSPACE_IMAGE_DIRECT_IO", default=False)
# Snapshots of image workspaces (docs/snapshots.md). Writers of the workspace wait while it is
# frozen: a clone that hangs must not hold them for long (the thaw runs whatever happens).
SNAPSHOT_CLONE_TIMEOUT_SECONDS = integer("SNAPSHOT_CLONE_TIMEOUT_SECONDS", 30, low=1, high=600)
# A snapshot before every workflow run, so that the whole workspace (untracked and ignored files
# too, which git cannot bring back) can go back to the state before it; 0 turns it off.
SNAPSHOT_BEFORE_RUN = boolean("SNAPSHOT_BEFORE_RUN", default=True)
# Retention of buckets without their own policy (PUT /mounts/{bucket}/snapshots/policy): keep
# at most this many (0: no limit) and none older than this many days (0: no limit). Every
# snapshot holds the blocks the workspace has changed since: unbounded, they grow the bucket.
SNAPSHOT_KEEP = integer("SNAPSHOT_KEEP", 20, low=0, high=100000)
SNAPSHOT_MAX_AGE_DAYS = integer("SNAPSHOT_MAX_AGE_DAYS", 30, low=0, high=36500)
# One writer per bucket (docs/mounts.md, "One writer per bucket"): mounting takes a lease, an S3
# object in the bucket naming this machine, renewed every MOUNT_LEASE_RENEW_SECONDS. Another
# machine may take it over once it is MOUNT_LEASE_TTL_SECONDS old; a holder that could not renew
# for that long stops writing first. Without conditional writes at the S3 server, a new lease is
# read back after MOUNT_LEASE_SETTLE_SECONDS to see that no other machine's write replaced it.
MOUNT_LEASE_TTL_SECONDS = integer("MOUNT_LEASE_TTL_SECONDS", 60, low=3, high=86400)
MOUNT_LEASE_RENEW_SECONDS = number("MOUNT_LEASE_RENEW_SECONDS", 15.0, low=0.2, high=43200.0)
MOUNT_LEASE_SETTLE_SECONDS = number("MOUNT_LEASE_SETTLE_SECONDS", 1.0, low=0.0, high=60.0)
# Set by Fly on every machine: part of the lease holder's id (mounts/lease.py, machine_id), so
# that two machines given copies of one volume are still two writers.
FLY_MACHINE_ID = env.str("FLY_MACHINE_ID", default="")
if MOUNT_LEASE_RENEW_SECONDS * 2 > MOUNT_LEASE_TTL_SECONDS:
    raise ImproperlyConfigured("MOUNT_LEASE_RENEW_SECONDS must be at most half of "
                               "MOUNT_LEASE_TTL_SECONDS (a renewal may fail once without the "
                               "lease expiring).")

# ---------------------------------------------------------------------------------------------
# Workspaces: a JuiceFS mount per bucket, or a local branch directory synced by rclone
# ---------------------------------------------------------------------------------------------

WORKSPACE_MODE = choice("WORKSPACE_MODE", env.str("WORKSPACE_MODE", default="mount"),
                         ("mount", "local"))
# Local mode (docs/local-mode.md): branch directories on the local disk, synced to S3 by rclone.
BRANCHES_DIR = Path(
    env.str("WELDR_BRANCHES_DIR", default=str(WELDR_ENV_VOL / "branches"))
).absolute()
# Below this much free space on BRANCHES_DIR's disk, least recently used branch directories go.
BRANCH_MIN_FREE_MB = integer("WELDR_BRANCH_MIN_FREE_MB", 2048, low=0, high=10**8)
# Background backup of changed branch directories; each version is also synced at once.
BRANCH_SYNC_INTERVAL_SECONDS = integer("WELDR_BRANCH_SYNC_INTERVAL_SECONDS", 60, low=1, high=86400)
BRANCH_SYNC_TIMEOUT_SECONDS = integer("WELDR_BRANCH_SYNC_TIMEOUT_SECONDS", 1800, low=10, high=86400)

