"""Litestream: its config, the replicate, sync and restore argv, and the choice of a restore
point and a replica state.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings

from mounts.system.volume import REPLICA_PATH, TEMPLATE, Paths, duration_seconds


def litestream_values(p: Paths, *, socket: bool = True) -> dict[str, Any]:
    return {
        "SOCKET_ENABLED": "true" if socket else "false",
        "LITESTREAM_SOCKET": str(p.litestream_socket),
        "META_DB": str(p.meta_db),
        "BUCKET": p.bucket,
        "REPLICA_PATH": REPLICA_PATH,
        "S3_ENDPOINT": settings.S3_ENDPOINT,
        "S3_REGION": settings.S3_REGION,
        "SYNC_INTERVAL": settings.LITESTREAM_SYNC_INTERVAL,
        "SNAPSHOT_INTERVAL": settings.LITESTREAM_SNAPSHOT_INTERVAL,
        "RETENTION": settings.LITESTREAM_RETENTION,
    }


def litestream_config(p: Paths, template: str | None = None, *, socket: bool = True) -> str:
    """The per-bucket config rendered from scripts/litestream-template.yml.

    Every value is validated before it gets here (bucket name, durations, an http(s) endpoint),
    so plain substitution cannot produce YAML that means something else. `socket=False`: the
    one-shot snapshot's copy, which must not take over the daemon's control socket.
    """
    text = template if template is not None else TEMPLATE.read_text()
    return string.Template(text).substitute(litestream_values(p, socket=socket))


def litestream_replicate_argv(litestream: str, p: Paths) -> list[str]:
    # -no-expand-env: the rendered file is literal; nothing from the environment leaks in.
    return [litestream, "replicate", "-config", str(p.litestream_config), "-no-expand-env"]


def litestream_sync_argv(litestream: str, p: Paths, *, timeout: int) -> list[str]:
    return [litestream, "sync", "-wait", "-timeout", str(timeout), "-json",
            "-socket", str(p.litestream_socket), str(p.meta_db)]


def litestream_control_argv(litestream: str, p: Paths, verb: str, *, timeout: int) -> list[str]:
    """`stop` or `start` replicating the database in the running daemon (its control socket)."""
    return [litestream, verb, "-timeout", str(timeout), "-json", "-socket",
            str(p.litestream_socket), str(p.meta_db)]


def litestream_snapshot_argv(litestream: str, config: Path) -> list[str]:
    """Sync once and write a new snapshot (level 9) from the local database, then exit."""
    return [litestream, "replicate", "-config", str(config), "-no-expand-env", "-once",
            "-force-snapshot"]


def sync_txid(value: Any) -> int:
    """A TXID of `litestream sync -json`: a JSON number (0.5.17), or a hex string."""
    return value if isinstance(value, int) else int(str(value or "0"), 16)


def litestream_restore_argv(litestream: str, p: Paths, *, timestamp: datetime | None,
                            output: Path, txid: int | None = None) -> list[str]:
    """Restore the state at `timestamp`, or exactly at `txid`, or (neither) the latest one.

    `-json` prints the TXID restored (logged); Litestream's own quick check deletes a database
    that fails it (storage hazard 8, docs/mounts.md), and steps.py checks again in full.
    """
    argv = [litestream, "restore", "-config", str(p.litestream_config), "-no-expand-env",
            "-if-replica-exists", "-integrity-check", "quick", "-json", "-o", str(output)]
    return argv + _restore_target(timestamp, txid) + [str(p.meta_db)]


def litestream_restore_plan_argv(litestream: str, p: Paths, *,
                                 timestamp: datetime | None) -> list[str]:
    """The files a restore at `timestamp` would apply, as JSON (nothing is written)."""
    return [litestream, "restore", "-config", str(p.litestream_config), "-no-expand-env",
            "-dry-run", "-json", "-o", f"{p.meta_db}.plan", *_restore_target(timestamp, None),
            str(p.meta_db)]


def litestream_ltx_argv(litestream: str, p: Paths) -> list[str]:
    """Every LTX file of the replica, all levels, as JSON: the states a restore can reach."""
    return [litestream, "ltx", "-config", str(p.litestream_config), "-no-expand-env",
            "-level", "all", "-json", str(p.meta_db)]


def _restore_target(timestamp: datetime | None, txid: int | None) -> list[str]:
    if txid is not None:
        return ["-txid", f"{txid:016x}"]
    if timestamp is not None:
        # Microseconds kept: truncating to the second would drop the sync that made the
        # last zero-RPO point (RFC 3339 with a fraction, which Go's parser accepts).
        return ["-timestamp", timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")]
    return []


@dataclass(frozen=True)
class ReplicaState:
    """A state of the metadata a restore can reach exactly: an LTX file ends there."""

    txid: int
    at: datetime | None  # when Litestream shipped it (the earliest file ending there)


def replica_states(listing: list[dict[str, Any]]) -> list[ReplicaState]:
    """The states `litestream ltx -level all -json` lists, newest first.

    Any file's last TXID is a state: the snapshot (level 9) before it plus the files of every
    level up to it rebuild it; where they do not (retention removed a piece), that restore
    fails and the next state is tried.
    """
    when: dict[int, datetime | None] = {}
    for item in listing:
        txid = int(item["max_txid"], 16)
        try:
            at: datetime | None = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            at = None
        known = when.get(txid)
        when[txid] = at if known is None or (at is not None and at < known) else known
    return [ReplicaState(txid, when[txid]) for txid in sorted(when, reverse=True)]


def restore_plan_txid(plan: dict[str, Any]) -> int | None:
    """The state a restore plan (`restore -dry-run -json`) ends at."""
    value = plan.get("max_txid")
    return int(value, 16) if value else None


def restore_point(now: datetime, durable_at: datetime | None) -> datetime | None:
    """The newest metadata state whose blocks are all in S3 (storage hazards 1–2, docs/mounts.md).

    Without writeback a block is uploaded before close() returns: the latest state is
    consistent (None). With writeback, a state older than the upload delay plus a margin is;
    a later zero-RPO sync (`durable_at`) proves a newer one.
    """
    if not settings.WRITEBACK_ENABLED:
        return None
    lag = duration_seconds(settings.UPLOAD_DELAY) + settings.RESTORE_MARGIN_SECONDS
    point = now - timedelta(seconds=lag)
    if durable_at is not None and durable_at > point:
        point = durable_at
    return point
