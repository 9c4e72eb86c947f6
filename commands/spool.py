"""A background command's output on disk: WELDR_ENV_VOL/exec-logs/<id>.jsonl, one event a line.

The agent's memory holds only where each event starts (8 bytes an event), not the output: 200
finished commands of EXEC_OUTPUT_MAX_BYTES per stream were up to 400 MiB of RAM. The files
outlive the process, so GET /exec/{id}/logs still answers after an agent restart; the newest
EXEC_LOGS_KEEP are kept. A command's output is a hostile program's bytes: stored base64 in
JSON, in a directory of the agent's own (0700) under a name the agent made, never interpreted.
"""

from __future__ import annotations

import base64
import json
import os
import re
from array import array
from pathlib import Path
from typing import Any

from django.conf import settings

from commands.execution import Event

ID = re.compile(r"^exec_[0-9a-f]{16}$")
# What a command that died with the agent ends with (its row is marked killed at start-up).
DIED_WITH_AGENT = {"exit_code": None, "timed_out": False, "duration_ms": None}


def spool_dir() -> Path:
    directory = settings.WELDR_ENV_VOL / "exec-logs"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def spool_path(exec_id: str) -> Path:
    if not ID.match(exec_id):
        raise ValueError(f"not a command id: {exec_id!r}")
    return spool_dir() / f"{exec_id}.jsonl"


def _encode(event: Event) -> bytes:
    record: dict = {"kind": event.kind}
    if event.data:
        record["data"] = base64.b64encode(event.data).decode()
    if event.info:
        record["info"] = event.info
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _decode(line: bytes) -> Event:
    record = json.loads(line)
    return Event(record["kind"], base64.b64decode(record.get("data", "")),
                 record.get("info") or {})


class Spool:
    """A list-like of a command's events kept in a file: append, len, index."""

    def __init__(self, path: Path, offsets: array, writer: object | None = None) -> None:
        self.path, self.offsets, self._writer = path, offsets, writer
        self._end = offsets[-1] if offsets else 0

    @classmethod
    def create(cls, exec_id: str) -> Spool:
        path = spool_path(exec_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        return cls(path, array("q"), os.fdopen(fd, "wb"))

    @classmethod
    def load(cls, exec_id: str) -> Spool | None:
        """A finished command's spool from an earlier process; None when there is none."""
        try:
            path = spool_path(exec_id)
            data = path.read_bytes()
        except (ValueError, FileNotFoundError):
            return None
        offsets, position = array("q"), 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a line cut by a crash mid-write
            offsets.append(position)
            position += len(line)
        spool = cls(path, offsets)
        spool._end = position
        if not offsets or spool[len(offsets) - 1].kind != "exit":
            spool.append(Event("exit", info=DIED_WITH_AGENT))
        return spool

    def append(self, event: Event) -> None:
        line = _encode(event)
        if self._writer is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOFOLLOW)
            self._writer = os.fdopen(fd, "wb")
        self._writer.seek(self._end)  # type: ignore[attr-defined]
        self._writer.write(line)  # type: ignore[attr-defined]
        self._writer.flush()  # type: ignore[attr-defined]
        self.offsets.append(self._end)
        self._end += len(line)
        if event.kind == "exit":
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # type: ignore[attr-defined]
            self._writer = None

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int | slice) -> Any:
        """One event, or a list of them for a slice (a resumed stream replays what came before
        its start to cut the output at the same characters)."""
        with open(self.path, "rb") as reader:
            if isinstance(index, slice):
                events = []
                for position in range(*index.indices(len(self))):
                    reader.seek(self.offsets[position])
                    events.append(_decode(reader.readline()))
                return events
            reader.seek(self.offsets[index])
            return _decode(reader.readline())


def spool_prune(*, keep: int, running: set[str]) -> None:
    """Remove all but the newest `keep` finished commands' files."""
    finished = [path for path in spool_dir().glob("exec_*.jsonl") if path.stem not in running]
    finished.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    for path in finished[keep:]:
        path.unlink(missing_ok=True)
