"""Typed errors of the mounts app; the one exception handler renders them (weldr_agent.errors)."""

from __future__ import annotations

from typing import Any

from rest_framework import status

from weldr_agent.errors import APIError, ConflictError, NotFoundError


class InvalidBucket(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_bucket"
    default_detail = (
        "A bucket name is 3-63 characters of a-z, 0-9, '.' and '-', starts and ends with a "
        "letter or digit, has no '..' and is not an IP address."
    )


class NotMounted(ConflictError):
    """The bucket has no live workspace (409: the caller asked for something that needs one)."""

    default_code = "not_mounted"
    default_detail = "The bucket is not mounted; mount it first (POST /mounts)."


class MountNotFound(NotFoundError):
    """The mounts API's own 404 for a bucket it does not know."""

    default_code = "not_mounted"
    default_detail = "The bucket is not mounted."


class MountLimitReached(ConflictError):
    default_code = "mount_limit"
    default_detail = "The maximum number of mounts is active; unmount one first."


class MountBusy(ConflictError):
    default_code = "mount_busy"
    default_detail = "Another operation on this bucket is in progress; try again shortly."


class StorageUnavailable(APIError):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "storage_unavailable"
    default_detail = "The S3 endpoint is unreachable or rejected the credentials."


class MountFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "mount_failed"
    default_detail = "The bucket could not be mounted."


class UnmountFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "unmount_failed"
    default_detail = "The bucket could not be unmounted cleanly."


class SyncFailed(APIError):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_code = "sync_failed"
    default_detail = "The workspace could not be made durable in S3."


class VolumeGone(ConflictError):
    """This machine holds a bucket's metadata but the bucket's data is gone (bucket deleted)."""

    default_code = "volume_gone"
    default_detail = "The bucket's JuiceFS data is gone; its local metadata was set aside."


class ReplicaMissing(ConflictError):
    """The bucket holds a JuiceFS volume but no metadata replica: its last writer has not
    shipped one yet (seconds after its first mount) or it was deleted. Never formatted over."""

    default_code = "metadata_replica_missing"
    default_detail = "The bucket holds a volume but no metadata replica to restore it from."


class InvalidLayout(APIError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_layout"
    default_detail = "The layout must be `files` or `image`."


class LayoutMismatch(ConflictError):
    """The volume was made with the other workspace layout: a volume keeps its layout."""

    default_code = "layout_mismatch"
    default_detail = "The bucket's workspace has the other layout."


class LayoutUnavailable(ConflictError):
    """The image layout needs a loop device and this machine can make none (docs/mounts.md,
    "Where loop devices are missing"): a 409, since the `files` layout still works here."""

    default_code = "layout_unavailable"
    default_detail = "This machine cannot make loop devices, which the image layout needs."


class BucketInUse(ConflictError):
    """Another machine holds the bucket's lease (docs/mounts.md, "One writer per bucket"); the
    body says which (`holder`) and how old its lease is (`lease_age_seconds`)."""

    default_code = "bucket_in_use"
    default_detail = "Another machine has this bucket mounted."

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.extra = extra


class LeaseLost(ConflictError):
    """This machine's lease on the bucket was taken over: it stopped writing the bucket."""

    default_code = "lease_lost"
    default_detail = "Another machine took this bucket over; this machine stopped writing it."

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.extra = extra
