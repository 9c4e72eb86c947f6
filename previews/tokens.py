"""Preview access tokens: signed, expiring, scoped to one preview (bucket + port).

`wpt_<payload>.<signature>`: the payload is `v1|bucket|port|expires|id|kind` in base64url, the
signature HMAC-SHA256 of it under a key of its own (PREVIEW_TOKEN_SECRET, else derived from
SECRET_KEY: a preview token is never a valid signature of anything else of Django's). Nothing is
stored for a token; only a one-shot token's id is written down when it is used, as an empty file
named by its expiry and id (`O_CREAT|O_EXCL`: the first use wins, no check-then-act), kept until
it expires so that the link stays used across an agent restart.

Kinds: `m` (many uses), `o` (one-shot: the first use spends it), `c` (the cookie the proxy sets
after a token in the URL; never minted by the API).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings

PREFIX = "wpt_"
MANY, ONE_SHOT, COOKIE = "m", "o", "c"
# A token is short (~150 bytes); anything much longer is not one, and is not decoded.
MAX_CHARS = 512


class TokenRefused(Exception):
    """Why a token does not open a preview: `status` is 401 (not a valid token) or 403 (a valid
    token for another preview)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Claims:
    bucket: str
    port: int
    expires: int
    id: str
    kind: str


@cache
def _key(secret: str, secret_key: str) -> bytes:
    if secret:
        return secret.encode()
    return hmac.new(secret_key.encode(), b"weldr-preview-token-v1", hashlib.sha256).digest()


def _sign(payload: bytes) -> bytes:
    key = _key(settings.PREVIEW_TOKEN_SECRET, settings.SECRET_KEY)
    return hmac.new(key, payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_mint(*, bucket: str, port: int, ttl_seconds: int, kind: str = MANY,
               expires: int | None = None) -> tuple[str, Claims]:
    """A new token for the preview `bucket`:`port`, valid `ttl_seconds` (or until `expires`)."""
    claims = Claims(bucket=bucket, port=port,
                    expires=expires if expires is not None else int(time.time()) + ttl_seconds,
                    id=secrets.token_hex(12), kind=kind)
    payload = "|".join(["v1", bucket, str(port), str(claims.expires), claims.id, kind]).encode()
    return f"{PREFIX}{_b64(payload)}.{_b64(_sign(payload))}", claims


def token_decode(token: str) -> Claims:
    """The claims of a token this agent signed and that has not expired; TokenRefused (401)
    otherwise. The preview it opens is not checked here (`token_check`)."""
    if not token.startswith(PREFIX) or len(token) > MAX_CHARS or token.count(".") != 1:
        raise TokenRefused(401, "not a preview access token")
    encoded, signature = token[len(PREFIX):].split(".")
    try:
        payload, given = _unb64(encoded), _unb64(signature)
    except ValueError:
        raise TokenRefused(401, "not a preview access token") from None
    if not hmac.compare_digest(given, _sign(payload)):
        raise TokenRefused(401, "the token's signature is not this agent's")
    try:
        version, bucket, port, expires, token_id, kind = payload.decode().split("|")
        claims = Claims(bucket=bucket, port=int(port), expires=int(expires), id=token_id,
                        kind=kind)
    except ValueError:
        raise TokenRefused(401, "not a preview access token") from None
    if version != "v1" or kind not in (MANY, ONE_SHOT, COOKIE):
        raise TokenRefused(401, "not a preview access token")
    if claims.expires <= time.time():
        raise TokenRefused(401, "the token has expired")
    return claims


def token_check(token: str, *, bucket: str, port: int) -> Claims:
    """The claims of a token that opens the preview `bucket`:`port` now; a one-shot token is
    spent by this call. TokenRefused: 401 (bad, expired, spent) or 403 (another preview)."""
    claims = token_decode(token)
    if (claims.bucket, claims.port) != (bucket, port):
        raise TokenRefused(403, "the token is for another preview")
    if claims.kind == ONE_SHOT:
        _spend(claims)
    return claims


def _spend(claims: Claims) -> None:
    directory = settings.PREVIEW_TOKENS_USED_DIR
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The id is this agent's own hex (the signature says so): a safe file name.
    path = directory / f"{claims.expires}-{claims.id}"
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        raise TokenRefused(401, "this one-shot token was already used") from None
    _forget_expired(directory)


def _forget_expired(directory) -> None:  # type: ignore[no-untyped-def]
    """Spent ids of expired tokens are not needed any more (the expiry refuses them)."""
    now = time.time()
    for entry in os.scandir(directory):
        expires, _, _ = entry.name.partition("-")
        if expires.isdigit() and int(expires) < now:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass


def preview_token_create(*, bucket: str, port: int | None = None, ttl_seconds: int | None = None,
                         one_shot: bool = False) -> tuple[str, Claims]:
    """A token for the bucket's preview (its current port unless `port` names another)."""
    from previews.errors import NoPreview
    from previews.models import Preview

    preview = Preview.objects.filter(bucket=bucket).first()
    if preview is None:
        raise NoPreview()
    return token_mint(bucket=bucket, port=port if port is not None else preview.port,
                      ttl_seconds=ttl_seconds or settings.PREVIEW_TOKEN_TTL_SECONDS,
                      kind=ONE_SHOT if one_shot else MANY)
