"""Pure builders for the mount path: paths, budgets, argv, environments and configs.

Nothing here runs a command or touches the disk (apart from reading the Litestream template):
`mounts/steps/` runs what these functions describe, and tests/mounts/test_system.py checks
them without running anything. The JuiceFS options live in `juicefs_mount_argv`
(mounts/system/juicefs.py) — the one place to change when tuning.

One module per seam; every builder and constant is importable from here as `system.<name>`.
"""

from mounts.system.image import (  # noqa: F401
    EXT4_MOUNT_OPTIONS,
    JUICEFS_FUSE_OPTIONS,
    NODE_DIR,
    NODE_FILE,
    Node,
    e2fsck_argv,
    e2fsck_ok,
    ext4_mount_argv,
    fstrim_argv,
    layout_parse,
    legacy_layout,
    losetup_attach_argv,
    losetup_detach_argv,
    mkfs_ext4_argv,
    umount_argv,
)
from mounts.system.juicefs import (  # noqa: F401
    ENCODED_DIR,
    FORMAT_SECRETS,
    ZSTD_BATCH,
    config_compression,
    format_without_secrets,
    fuse_options_merge,
    juicefs_format_argv,
    juicefs_mount_argv,
    staged_block_key,
    verify_cache_value,
    zstd_argv,
    zstd_name,
)
from mounts.system.litestream import (  # noqa: F401
    ReplicaState,
    litestream_config,
    litestream_control_argv,
    litestream_ltx_argv,
    litestream_replicate_argv,
    litestream_restore_argv,
    litestream_restore_plan_argv,
    litestream_snapshot_argv,
    litestream_sync_argv,
    litestream_values,
    replica_states,
    restore_plan_txid,
    restore_point,
    sync_txid,
)
from mounts.system.memory import (  # noqa: F401
    Budget,
    budget,
    free_space_ratio,
)
from mounts.system.snapshots import (  # noqa: F401
    CONTROL_INODE,
    CONTROL_NAME,
    FORK_DIR,
    SNAPSHOT_DIR,
    SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE,
    clone_message,
    clone_reply,
    exclusive_bytes,
    fork_paths,
    info_slices,
    juicefs_info_argv,
    snapshot_dir,
    snapshot_id_valid,
    snapshot_image,
    snapshot_name_valid,
    snapshot_sidecar,
    superblock_clean,
)
from mounts.system.tools import (  # noqa: F401
    JUICEFS,
    LITESTREAM,
    TAG_VARIABLE,
    bucket_url,
    daemon_tag,
    juicefs_env,
    litestream_env,
)
from mounts.system.volume import (  # noqa: F401
    CHUNK_COUNTER_ADVANCE,
    DURABLE_MARKER_KEY,
    FILES,
    IMAGE,
    IMAGE_DIR,
    IMAGE_NAME,
    LAYOUT_KEY,
    LAYOUTS,
    LEASE_KEY,
    LEASE_PROBE_PREFIX,
    REPLICA_PATH,
    ROOT_INODE,
    TEMPLATE,
    UNIX_SOCKET_PATH_MAX,
    VOLUME_NAME,
    VOLUME_UUID_KEY,
    Paths,
    duration_seconds,
    meta_url,
    paths,
    socket_path,
)
