"""Files the agent keeps for itself under WELDR_ENV_VOL (no Django imports: settings use it)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


def local_s3_keys(directory: Path) -> tuple[str, str]:
    """Return the local S3 server's keys, generating long random ones on first use.

    rclone's S3 server rejects very short keys, so both are long; the file is private (0600)
    and reused so that every process given the same WELDR_ENV_VOL sees the same keys.
    """
    path = directory / "keys.json"
    try:
        data = json.loads(path.read_text())
        return data["access_key_id"], data["secret_access_key"]
    except (OSError, ValueError, KeyError):
        pass
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "access_key_id": "weldr" + secrets.token_hex(10),
        "secret_access_key": secrets.token_urlsafe(30),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    # Two processes starting together must agree: the first rename wins, the second re-reads.
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    data = json.loads(path.read_text())
    return data["access_key_id"], data["secret_access_key"]
