"""The bucket's lease: one machine writes a bucket at a time (docs/mounts.md, "One writer").

The lease is one object, system.LEASE_KEY, in the bucket: JSON naming the machine that holds
it. Mounting takes it, a background loop renews it (mounts/renewal.py), unmounting marks it
released (kept, so that the last writer is known). Its age is measured by the S3 server's own
clock (the response's Date minus the object's Last-Modified), never by comparing two machines'
clocks. Another machine may take it once it is MOUNT_LEASE_TTL_SECONDS old, or at once with
`force`.

Writes are conditional (If-None-Match: * to create, If-Match: <etag> to replace) where the
server honours that, which is probed once per endpoint. Where it does not (rclone serve s3
1.75 ignores both, measured), a new lease is read back after MOUNT_LEASE_SETTLE_SECONDS: of two
machines racing, both read the same last write, and only its writer goes on. What remains is
documented in docs/mounts.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from mounts import system
from mounts.errors import BucketInUse, LeaseLost, StorageUnavailable
from weldr_agent import s3

logger = logging.getLogger("weldr.mounts")

MACHINE_ID_FILE = "machine-id"
_RACE_RETRIES = 3


# ---------------------------------------------------------------------------------------------
# Pure: the record, its age, whether it is free
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    machine: str
    host: str
    instance: str
    token: str
    acquired_at: str
    released: bool = False

    def holder(self) -> dict[str, str]:
        """What a 409 says about the holder."""
        return {"machine": self.machine, "host": self.host, "instance": self.instance,
                "acquired_at": self.acquired_at}


@dataclass(frozen=True)
class Seen:
    """One read of the lease: its record (None: no lease), ETag and age in seconds."""

    record: Record | None
    etag: str | None
    age: float


def record_body(record: Record) -> bytes:
    return json.dumps({"machine": record.machine, "host": record.host,
                       "instance": record.instance, "token": record.token,
                       "acquired_at": record.acquired_at, "released": record.released},
                      sort_keys=True).encode()


def record_parse(body: bytes) -> Record:
    """The record in a lease object; ValueError for anything else."""
    try:
        data = json.loads(body)
        return Record(machine=str(data["machine"]), host=str(data.get("host", "")),
                      instance=str(data.get("instance", "")), token=str(data["token"]),
                      acquired_at=str(data.get("acquired_at", "")),
                      released=bool(data.get("released", False)))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a lease record: {error}") from error


def age_seconds(server_date: str | None, last_modified: datetime) -> float:
    """How long ago the server wrote the object, by the server's clock (never negative)."""
    if not server_date:
        return max((datetime.now(UTC) - last_modified).total_seconds(), 0.0)
    return max((parsedate_to_datetime(server_date) - last_modified).total_seconds(), 0.0)


def free_for(seen: Seen, machine: str, ttl: float) -> bool:
    """True when `machine` may take the lease without force: none, released, its own, expired."""
    record = seen.record
    return (record is None or record.released or record.machine == machine
            or seen.age >= ttl)


# ---------------------------------------------------------------------------------------------
# This machine
# ---------------------------------------------------------------------------------------------


def machine_id() -> str:
    """This machine's id: a random id kept on WELDR_ENV_VOL, with FLY_MACHINE_ID when set.

    The volume is the machine's memory (its metadata, staged blocks, state database): an agent
    restarted on the same volume is the same writer and takes its own lease back at once; a new
    machine (a new volume) is another writer. FLY_MACHINE_ID tells apart two machines given
    copies of one volume (a fork or a restored snapshot).
    """
    path = settings.WELDR_ENV_VOL / MACHINE_ID_FILE
    own = _machine_id_read(path) or _machine_id_create(path)
    fly = settings.FLY_MACHINE_ID
    return f"{own}@{fly}" if fly else own


def _machine_id_read(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    return value or None


def _machine_id_create(path: Path) -> str:
    # O_EXCL: the agent and a manage.py command creating it at once agree on one id.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


def _record_new(token: str) -> Record:
    return Record(machine=machine_id(), host=socket.gethostname(),
                  instance=settings.INSTANCE_ID, token=token,
                  acquired_at=datetime.now(UTC).isoformat(timespec="seconds"))


# ---------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------


class _Precondition(Exception):
    """The server refused a conditional write: someone else wrote the lease meanwhile."""


def _client() -> Any:
    """An S3 client for the lease alone, with short timeouts and one attempt: a renewal that
    hangs must fail well before the lease could expire (weldr_agent.s3's client waits 30 s and
    retries). Explicit keys, as everywhere: boto3 never walks its credential chain."""
    key = (settings.S3_ENDPOINT, settings.S3_REGION, settings.S3_ACCESS_KEY_ID,
           settings.S3_SECRET_ACCESS_KEY)
    with _clients_lock:
        if key not in _clients:
            endpoint, region, key_id, secret = key
            _clients[key] = s3.new_client(
                "s3", endpoint_url=endpoint,
                region_name=region if region != "auto" else "us-east-1",
                aws_access_key_id=key_id, aws_secret_access_key=secret,
                config=Config(s3={"addressing_style": "path"}, connect_timeout=3,
                              read_timeout=5, retries={"max_attempts": 1, "mode": "standard"},
                              signature_version="s3v4"))
        return _clients[key]


_clients: dict[tuple[str, str, str, str], Any] = {}
_clients_lock = threading.Lock()


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _storage(error: Exception, bucket: str) -> StorageUnavailable:
    return StorageUnavailable(f"The lease of bucket {bucket!r} could not be read or written at "
                              f"{settings.S3_ENDPOINT}: {error}")


def read(bucket: str) -> Seen:
    try:
        got = _client().get_object(Bucket=bucket, Key=system.LEASE_KEY)
        body = got["Body"].read()
    except ClientError as error:
        if _code(error) in {"NoSuchKey", "404"}:
            return Seen(None, None, 0.0)
        raise _storage(error, bucket) from error
    except BotoCoreError as error:
        raise _storage(error, bucket) from error
    date = got["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
    age = age_seconds(date, got["LastModified"])
    try:
        record = record_parse(body)
    except ValueError as error:
        # Only a holder of the S3 keys writes there; an unreadable lease is nobody's once it
        # expires, like any other.
        logger.warning("lease of %s is unreadable (%s); treating it as a foreign one", bucket,
                       error)
        record = Record(machine="unknown", host="", instance="", token="", acquired_at="")
    return Seen(record, got.get("ETag"), age)


def _write(bucket: str, record: Record, *, etag: str | None, create: bool) -> str:
    """Put the record; conditional where the server honours it. Returns the new ETag."""
    extra: dict[str, Any] = {}
    if conditional_writes(bucket):
        if create:
            extra["IfNoneMatch"] = "*"
        elif etag:
            extra["IfMatch"] = etag
    try:
        put = _client().put_object(Bucket=bucket, Key=system.LEASE_KEY,
                                     Body=record_body(record), ContentType="application/json",
                                     **extra)
    except ClientError as error:
        if _code(error) in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
            raise _Precondition() from error
        raise _storage(error, bucket) from error
    except BotoCoreError as error:
        raise _storage(error, bucket) from error
    return str(put.get("ETag", ""))


_conditional: dict[str, bool] = {}
_conditional_lock = threading.Lock()


def conditional_writes(bucket: str) -> bool:
    """Whether the S3 server honours If-None-Match/If-Match on PUT: probed once per endpoint.

    A server that ignores the headers accepts a second If-None-Match: * create of one key; one
    that honours them answers 412; one that does not know them may answer 501.
    """
    with _conditional_lock:
        known = _conditional.get(settings.S3_ENDPOINT)
        if known is None:
            known = _conditional[settings.S3_ENDPOINT] = _probe(bucket)
            logger.info("S3 at %s %s conditional writes: %s", settings.S3_ENDPOINT,
                        "honours" if known else "does not honour",
                        "leases use If-Match" if known else
                        "leases are read back after MOUNT_LEASE_SETTLE_SECONDS")
        return known


def _probe(bucket: str) -> bool:
    client = _client()
    key = f"{system.LEASE_PROBE_PREFIX}{secrets.token_hex(8)}"
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
        client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        honoured = False
    except ClientError as error:
        honoured = _code(error) in {"PreconditionFailed", "412"}
        if not honoured and _code(error) not in {"NotImplemented", "501", "InvalidArgument"}:
            raise _storage(error, bucket) from error
    except BotoCoreError as error:
        raise _storage(error, bucket) from error
    finally:
        try:
            client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as error:
            logger.warning("could not delete the probe object %s of %s: %s", key, bucket, error)
    return honoured


# ---------------------------------------------------------------------------------------------
# This process's leases
# ---------------------------------------------------------------------------------------------


@dataclass
class Held:
    token: str
    etag: str
    renewed: float  # time.monotonic() when the last confirmed write was sent


_held: dict[str, Held] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(bucket: str) -> threading.Lock:
    # Renewal (its own thread) and mount/unmount (request threads) never interleave a
    # read-then-write of one bucket's lease in this process.
    with _locks_guard:
        return _locks.setdefault(bucket, threading.Lock())


def held() -> list[str]:
    return sorted(_held)


def silent_for(bucket: str) -> float | None:
    """Seconds since this process last confirmed the bucket's lease; None when it holds none."""
    entry = _held.get(bucket)
    return None if entry is None else time.monotonic() - entry.renewed


def track_unconfirmed(bucket: str) -> None:
    """Hold a lease that could not be confirmed as if it were already due: the next failed
    renewal stops the writers (mounts.fencing.renew_one), a successful one confirms it."""
    _held.setdefault(bucket, Held("", "", time.monotonic() - settings.MOUNT_LEASE_TTL_SECONDS))


def forget(bucket: str) -> None:
    _held.pop(bucket, None)


def acquire(bucket: str, *, force: bool = False) -> Record | None:
    """Take the bucket's lease for this machine; the previous record (the last writer) or None.

    BucketInUse (409) while another machine holds it and it has not expired, unless `force`.
    """
    with _lock(bucket):
        for _attempt in range(_RACE_RETRIES):
            seen = read(bucket)
            _refuse_unless_free(bucket, seen, force=force)
            mine = _record_new(secrets.token_hex(16))
            # The lease counts from before the write was sent: never later than the server's.
            sent = time.monotonic()
            try:
                etag = _write(bucket, mine, etag=seen.etag, create=seen.record is None)
            except _Precondition:
                continue  # someone wrote it between our read and write: look again
            if not conditional_writes(bucket):
                settled = _settle_and_verify(bucket, mine, force=force)
                if settled is None:
                    continue  # a forced lease the holder's renewal overwrote: write it again
                etag = settled
            _held[bucket] = Held(mine.token, etag, sent)
            if force and seen.record is not None and not free_for(
                    seen, mine.machine, settings.MOUNT_LEASE_TTL_SECONDS):
                logger.warning("FORCED takeover of %s from %s (lease %.0f s old)", bucket,
                               seen.record.holder(), seen.age)
            return seen.record
        raise _in_use(bucket, read(bucket))


def _settle_and_verify(bucket: str, mine: Record, *, force: bool) -> str | None:
    """Read the lease back after a while: a machine that wrote after us wins, and we step back.

    With `force` the takeover is tried again instead (None): the holder's renewal reads the
    lease and writes it a moment later, and a forced write landing in between is overwritten
    (seen in a suite run). The renewal after that reads the forced record and fences the holder.
    """
    time.sleep(settings.MOUNT_LEASE_SETTLE_SECONDS)
    seen = read(bucket)
    if seen.record is not None and seen.record.token == mine.token:
        return seen.etag or ""
    if force:
        logger.warning("a forced lease of %s was replaced while settling (the holder's renewal); "
                       "writing it again", bucket)
        return None
    raise _in_use(bucket, seen)


def _refuse_unless_free(bucket: str, seen: Seen, *, force: bool) -> None:
    if force or free_for(seen, machine_id(), settings.MOUNT_LEASE_TTL_SECONDS):
        return
    raise _in_use(bucket, seen)


def _in_use(bucket: str, seen: Seen) -> BucketInUse:
    record = seen.record or Record(machine="unknown", host="", instance="", token="",
                                   acquired_at="")
    ttl = settings.MOUNT_LEASE_TTL_SECONDS
    return BucketInUse(
        f"Bucket {bucket!r} is mounted by another machine ({record.machine}, host "
        f"{record.host or '?'}); its lease was renewed {seen.age:.0f} s ago and expires "
        f"{ttl} s after its last renewal. Try again then, or take it over with \"force\": true "
        "only if that machine is gone (docs/mounts.md).",
        holder=record.holder(), lease_age_seconds=round(seen.age, 1), lease_ttl_seconds=ttl)


def renew(bucket: str) -> None:
    """Confirm and extend this machine's lease. LeaseLost when another machine holds it now;
    StorageUnavailable when S3 does not answer (the caller decides when that means stopping)."""
    me = machine_id()
    with _lock(bucket):
        seen = read(bucket)
        record = seen.record
        if record is not None and record.machine != me:
            forget(bucket)
            raise LeaseLost(
                f"Bucket {bucket!r} is now held by machine {record.machine} (host "
                f"{record.host or '?'}): this machine stopped writing it.",
                holder=record.holder(), lease_age_seconds=round(seen.age, 1))
        if record is None or record.released:
            # Ours to write (nobody else's record is there), and we are still mounted.
            logger.warning("lease of %s was %s while mounted here; taking it again", bucket,
                           "missing" if record is None else "released")
        token = record.token if record is not None and not record.released \
            else secrets.token_hex(16)
        renewed = Record(machine=me, host=socket.gethostname(), instance=settings.INSTANCE_ID,
                         token=token, acquired_at=record.acquired_at if record else
                         datetime.now(UTC).isoformat(timespec="seconds"))
        sent = time.monotonic()
        try:
            etag = _write(bucket, renewed, etag=seen.etag, create=record is None)
        except _Precondition:
            now = read(bucket)
            forget(bucket)
            holder = now.record.holder() if now.record else {}
            raise LeaseLost(f"The lease of bucket {bucket!r} was taken while renewing it.",
                            holder=holder, lease_age_seconds=round(now.age, 1)) from None
        _held[bucket] = Held(token, etag, sent)


def release(bucket: str) -> None:
    """Mark this machine's lease released (kept as the last writer's record); best effort."""
    me = machine_id()
    with _lock(bucket):
        forget(bucket)
        try:
            seen = read(bucket)
            record = seen.record
            if record is None or record.machine != me or record.released:
                return
            done = Record(machine=record.machine, host=record.host, instance=record.instance,
                          token=record.token, acquired_at=record.acquired_at, released=True)
            _write(bucket, done, etag=seen.etag, create=False)
        except (StorageUnavailable, _Precondition) as error:
            # It then expires by itself after MOUNT_LEASE_TTL_SECONDS.
            logger.warning("could not release the lease of %s: %s", bucket, error)
