"""S3 bucket names (used until the mounts app's validator is merged; the same rules)."""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> None:
    """3-63 of a-z 0-9 . -, starting and ending with a letter or digit, no `..`, not an IP."""
    if not _BUCKET.match(name or "") or ".." in name:
        raise ValidationError(f"{name!r} is not a valid bucket name (3-63 of a-z 0-9 . -).")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return
    raise ValidationError(f"{name!r} is not a valid bucket name: it looks like an IP address.")
