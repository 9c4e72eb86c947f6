"""Bucket names: S3's rules, checked before anything touches the machine."""

from __future__ import annotations

import ipaddress
import re

from mounts.errors import InvalidBucket

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: object) -> str:
    """Return `name` when it is a valid S3 bucket name; raise InvalidBucket otherwise.

    The name ends up in paths, argv and YAML, so this is also the guard against `/`, `..`,
    spaces and shell metacharacters: the pattern admits only a-z, 0-9, '.' and '-'.
    """
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        raise InvalidBucket()
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidBucket()
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidBucket()
