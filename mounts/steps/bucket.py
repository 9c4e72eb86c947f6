"""The bucket in S3: created when missing, and the objects the agent keeps beside the volume
(the durability marker, the layout record).
"""

from __future__ import annotations

from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from mounts import system
from mounts.errors import MountFailed, StorageUnavailable
from weldr_agent import s3

_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                "InvalidToken", "ExpiredToken"}


def _storage_error(error: Exception, bucket: str) -> StorageUnavailable:
    return StorageUnavailable(
        f"S3 at {settings.S3_ENDPOINT} refused or did not answer for bucket {bucket!r}: {error}"
    )


def ensure_bucket(bucket: str) -> None:
    """Create the bucket when it does not exist; StorageUnavailable when S3 says no."""
    client = s3.client()
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def prefix_empty(bucket: str, prefix: str) -> bool:
    try:
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as error:
        raise _storage_error(error, bucket) from error
    return not listed.get("KeyCount") and not listed.get("Contents")


def volume_present(bucket: str) -> bool:
    """The bucket still holds the JuiceFS volume: `juicefs format` writes this object."""
    try:
        s3.client().head_object(Bucket=bucket, Key=system.VOLUME_UUID_KEY)
        return True
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404",
                                                                     "NotFound"}:
            return False
        raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def durable_marker_read(bucket: str) -> datetime | None:
    try:
        body = s3.client().get_object(Bucket=bucket, Key=system.DURABLE_MARKER_KEY)["Body"]
        return datetime.fromisoformat(body.read().decode().strip())
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404"}:
            return None
        raise _storage_error(error, bucket) from error
    except ValueError:
        return None
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error


def durable_marker_write(bucket: str, when: datetime) -> None:
    s3.client().put_object(Bucket=bucket, Key=system.DURABLE_MARKER_KEY,
                           Body=when.isoformat().encode())


def layout_record_read(bucket: str) -> str | None:
    """The layout recorded when the volume was made (system.LAYOUT_KEY); None for a volume
    made before the record existed."""
    try:
        body = s3.client().get_object(Bucket=bucket, Key=system.LAYOUT_KEY)["Body"].read()
    except ClientError as error:
        if str(error.response.get("Error", {}).get("Code", "")) in {"NoSuchKey", "404"}:
            return None
        raise _storage_error(error, bucket) from error
    except BotoCoreError as error:
        raise _storage_error(error, bucket) from error
    try:
        return system.layout_parse(body.decode("utf-8", "replace"))
    except ValueError as error:
        # Only a holder of the S3 keys writes there: refuse rather than guess.
        raise MountFailed(f"{system.LAYOUT_KEY} in bucket {bucket!r} is invalid: {error}") \
            from error


def layout_record_write(bucket: str, layout: str) -> None:
    try:
        s3.client().put_object(Bucket=bucket, Key=system.LAYOUT_KEY, Body=layout.encode())
    except (ClientError, BotoCoreError) as error:
        raise _storage_error(error, bucket) from error
