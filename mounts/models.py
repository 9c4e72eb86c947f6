"""Machine state of bucket mounts (local SQLite state database)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class MountQuerySet(models.QuerySet["Mount"]):
    def live(self) -> MountQuerySet:
        return self.filter(status=Mount.Status.MOUNTED)


class Layout(models.TextChoices):
    FILES = "files"
    IMAGE = "image"


class Mount(models.Model):
    class Status(models.TextChoices):
        MOUNTING = "mounting"
        MOUNTED = "mounted"
        UNMOUNTING = "unmounting"
        FAILED = "failed"
        # Another machine took the bucket's lease, or it could not be renewed before it expired:
        # this machine stopped writing (docs/mounts.md, "One writer per bucket").
        LEASE_LOST = "lease_lost"

    # One row per bucket and one row per slot: the table's size is the slot count (MAX_MOUNTS).
    bucket = models.CharField(max_length=63, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.MOUNTING)
    cache_size_mb = models.PositiveIntegerField()
    buffer_size_mb = models.PositiveIntegerField()
    restored = models.BooleanField(default=False)
    # files: the workspace is the JuiceFS mount; image: an ext4 image inside the volume,
    # loop-mounted (docs/mounts.md, "Layouts"). The volume's own, found at mount.
    layout = models.CharField(max_length=8, choices=Layout.choices, default=Layout.FILES)
    juicefs_pid = models.PositiveIntegerField(null=True, blank=True)
    litestream_pid = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    mounted_at = models.DateTimeField(null=True, blank=True)
    # The last moment up to which every write was confirmed durable in S3 (zero-RPO sync).
    synced_at = models.DateTimeField(null=True, blank=True)
    # A fork (docs/snapshots.md, "Forks"): the bucket whose volume holds this workspace's image.
    # Empty for a bucket's own workspace. A fork has no JuiceFS, Litestream or lease of its own.
    parent = models.CharField(max_length=63, blank=True, default="", db_index=True)

    objects = MountQuerySet.as_manager()

    class Meta:
        ordering = ["bucket"]

    def __str__(self) -> str:
        return self.bucket

    @property
    def path(self) -> str:
        if settings.WORKSPACE_MODE == "local":
            from mounts.local import branch_dir

            return str(branch_dir(self.bucket))
        return str(settings.WORKSPACE_BASE / self.bucket)


class Snapshot(models.Model):
    """A cached copy of one snapshot's sidecar (docs/snapshots.md). The volume's sidecars are
    the truth: GET /mounts/{bucket}/snapshots rebuilds these rows from them, so a new machine
    lists what the bucket holds."""

    class Kind(models.TextChoices):
        MANUAL = "manual"
        CHECKPOINT = "checkpoint"  # taken before a workflow run

    snapshot_id = models.CharField(max_length=32)
    bucket = models.CharField(max_length=63, db_index=True)
    name = models.CharField(max_length=64, blank=True, default="")
    note = models.TextField(blank=True, default="")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.MANUAL)
    run_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()
    frozen_ms = models.FloatField(default=0)
    # The bytes only this snapshot holds (its slices nobody else references), when last listed.
    size_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["bucket", "created_at"]
        constraints = [models.UniqueConstraint(fields=["bucket", "snapshot_id"],
                                               name="snapshot_unique")]

    def __str__(self) -> str:
        return f"{self.bucket}/{self.snapshot_id}"

