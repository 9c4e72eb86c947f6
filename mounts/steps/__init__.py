"""The steps of mounting and unmounting, run on the machine through weldr_agent.runner.

Each function does one step and raises a typed error (mounts.errors) when it fails; the order
of the steps and the state database belong to mounts/services.py and the strategy of the
machine (mounts/juicefs.py). Argv, environments and configs come from mounts/system/.

One module per seam; every step is importable from here as `steps.<name>`, as callers use it.
"""

from mounts.steps.bucket import (  # noqa: F401
    durable_marker_read,
    durable_marker_write,
    ensure_bucket,
    layout_record_read,
    layout_record_write,
    prefix_empty,
    volume_present,
)
from mounts.steps.durability import (  # noqa: F401
    STAGED_UPLOAD_THREADS,
    leftovers,
    staged_encode,
    staged_upload,
    teardown,
    volume_compression,
)
from mounts.steps.image import (  # noqa: F401
    image_check,
    image_clean_record,
    image_clean_take,
    image_create,
    image_file_flush,
    image_flush,
    image_identity,
    image_mount,
    image_mounted,
    image_release,
    loop_detach,
    loop_devices,
    loop_release_wait,
)
from mounts.steps.locks import (  # noqa: F401
    bucket_lock,
    try_bucket_lock,
)
from mounts.steps.metadata import (  # noqa: F401
    chunk_counter_advance,
    db_remove,
    format_secrets_remove,
    integrity_problem,
    litestream_config_write,
    metadata_prepare,
    metadata_restore,
    metadata_set_aside,
    restore_into,
    volume_empty,
    volume_layout_legacy,
)
from mounts.steps.mountpoints import (  # noqa: F401
    answers,
    filesystem_sync,
    is_mounted,
    mount_table,
    umount,
)
from mounts.steps.processes import (  # noqa: F401
    LOG_TAIL,
    MEMORY_HIERARCHY,
    daemons,
    juicefs_ready,
    juicefs_spawn,
    juicefs_start,
    litestream_ready,
    litestream_spawn,
    litestream_start,
    litestream_sync,
    memory_group,
    memory_release,
    oom_score_adjust,
    orphan_abort,
    owns,
    pid_stop,
    workspace_prepare,
)
