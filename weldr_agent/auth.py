"""Authentication: agent tokens and the platform's Better Auth credentials (docs/api.md).

Each class answers `None` when the request does not carry its kind of credential and raises
`AuthenticationFailed` when it carries one that is bad, so that a tampered credential is a 401
rather than falling through to "anonymous".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import jwt
from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from weldr_agent import access
from weldr_agent.access import OPERATOR, Scope
from weldr_agent.betterauth.checks import plugin_absent
from weldr_agent.betterauth.models import ApiKey, Session, User
from weldr_agent.models import TOKEN_PREFIX, ApiToken

RAW_SESSION_TOKEN = re.compile(r"^[A-Za-z0-9]{32}$")
JWT_SHAPE = re.compile(r"^eyJ[\w-]*\.[\w-]+\.[\w-]*$")
JWT_ALGORITHMS = ["EdDSA", "ES256", "ES512", "RS256", "PS256"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an agent token (no user) or a Better Auth user."""

    kind: str
    name: str
    user_id: str | None = None
    is_authenticated: bool = True
    # An agent token's scope (weldr_agent.access); a platform user's objects are what they own.
    scope: Scope = OPERATOR

    @property
    def is_platform_user(self) -> bool:
        return self.user_id is not None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def session_cookie_names() -> tuple[str, str]:
    """Better Auth's session cookie under the platform's `advanced.cookiePrefix`.

    Over HTTPS Better Auth sets the `__Secure-` form; both are accepted, the secure one first.
    """
    name = f"{settings.BETTER_AUTH_COOKIE_PREFIX}.session_token"
    return f"__Secure-{name}", name


def jwks_url() -> str:
    """Where the platform serves its JWKS: its origin, Better Auth's `basePath`, `/jwks`."""
    return f"{settings.BETTER_AUTH_URL}{settings.BETTER_AUTH_BASE_PATH}/jwks"


def _bearer(request: Request) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _failed(detail: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(detail, code="not_authenticated")


class _BearerChallenge(authentication.BaseAuthentication):
    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="weldr-agent"'


class AgentTokenAuthentication(_BearerChallenge):
    """`Authorization: Bearer wat_…` created by `manage.py create_api_token`."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        token = _bearer(request)
        if token is None or not token.startswith(TOKEN_PREFIX):
            return None
        row = ApiToken.objects.find(token)
        if row is None:
            raise _failed("The agent token is unknown or revoked.")
        row.touch()
        return Principal(kind="agent_token", name=row.name, scope=row.scope), row


def unsign_session_cookie(value: str, secret: str) -> str | None:
    """Return the session token of a Better Auth signed value, or None when the HMAC is wrong.

    Value: urlencode(token + "." + base64(HMAC_SHA256(secret, token))) (Better Auth's signed-cookie
    format, docs/foundation.md).
    """
    token, dot, signature = unquote(value).rpartition(".")
    if not dot or not token or not secret:
        return None
    expected = base64.b64encode(
        hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest()
    ).decode()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    return token


def sign_session_token(token: str, secret: str) -> str:
    """The inverse of `unsign_session_cookie` (used by tests and by operators' tooling)."""
    signature = base64.b64encode(hmac.new(secret.encode(), token.encode(), hashlib.sha256).digest())
    return f"{token}.{signature.decode()}"


def session_user_id(token: str) -> str | None:
    # Expiry compared by the database: a Drizzle schema's `timestamp` (without time zone)
    # column reads back naive, which Python cannot compare with an aware "now".
    live = Session.objects.filter(token=token, expires_at__gt=timezone.now())
    return live.values_list("user_id", flat=True).first()


class BetterAuthSessionAuthentication(_BearerChallenge):
    """A Better Auth session: signed cookie, or bearer token signed or raw."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        cookie = next((request.COOKIES[name] for name in session_cookie_names()
                       if name in request.COOKIES), None)
        bearer = _bearer(request)
        if bearer is not None and not bearer.startswith(TOKEN_PREFIX):
            # An explicit bearer wins over a cookie the browser happens to send along.
            token = bearer if RAW_SESSION_TOKEN.match(bearer) else unsign_session_cookie(
                bearer, settings.BETTER_AUTH_SECRET)
            if token is None:
                raise _failed("The bearer token is not a valid credential.")
        elif cookie is not None:
            token = unsign_session_cookie(cookie, settings.BETTER_AUTH_SECRET)
            if token is None:
                raise _failed("The session cookie's signature is invalid.")
            _check_origin(request)
        else:
            return None
        user_id = session_user_id(token)
        if user_id is None:
            raise _failed("The session is unknown or has expired; sign in again.")
        return Principal(kind="session", name=user_id, user_id=user_id), None


def origin_allowed(origin: str, host: str) -> bool:
    """An allowed origin (CORS_ORIGIN) or the agent's own pages, whatever the scheme: behind a
    TLS-terminating proxy (Fly) a request arrives over http while the page is https://; host and
    port are what tell origins apart."""
    return origin in settings.CORS_ORIGIN or origin in (f"http://{host}", f"https://{host}")


def _check_origin(request: Request) -> None:
    """A cookie rides along on cross-site requests: unsafe ones must come from a known origin."""
    origin = request.headers.get("Origin")
    if request.method in permissions.SAFE_METHODS or not origin:
        return
    if origin_allowed(origin, request.get_host()):
        return
    raise exceptions.PermissionDenied(
        f"Cookie-authenticated {request.method} from origin {origin} is refused; "
        "add it to CORS_ORIGIN or send a bearer token.", code="forbidden",
    )


class JWKSUnavailable(exceptions.APIException):
    # Defined here, not in weldr_agent.errors: that module imports DRF's views, which import
    # the authentication classes (this module) while DRF reads its settings.
    status_code = 503
    default_code = "jwks_unavailable"
    default_detail = "The platform's JWKS could not be fetched."


@lru_cache(maxsize=4)
def _jwks_client(url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)


class BetterAuthJWTAuthentication(_BearerChallenge):
    """`Authorization: Bearer <JWT>` from Better Auth's jwt plugin, checked against its JWKS."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        token = _bearer(request)
        if token is None or not JWT_SHAPE.match(token):
            return None
        base = settings.BETTER_AUTH_URL
        if not base:
            raise _failed("JWTs are not accepted: BETTER_AUTH_URL is not configured.")
        try:
            key = _jwks_client(jwks_url()).get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token, key.key, algorithms=JWT_ALGORITHMS, audience=base, issuer=base,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as error:
            # Not the caller's fault: the platform is unreachable, so retrying later may work.
            raise JWKSUnavailable(
                f"The platform's JWKS ({jwks_url()}) could not be fetched: {error}"
            ) from None
        except jwt.PyJWTError as error:
            raise _failed(f"The JWT is invalid: {error}") from None
        return Principal(kind="jwt", name=claims["sub"], user_id=claims["sub"]), claims


def _aware(moment: datetime) -> datetime:
    """A `timestamp` column (Drizzle's default) reads back naive; the platform writes it in UTC."""
    return timezone.make_aware(moment, UTC) if timezone.is_naive(moment) else moment


def api_key_hash(key: str) -> str:
    """How Better Auth's api-key plugin stores a key: base64url(SHA-256(key)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).rstrip(b"=").decode()


class BetterAuthApiKeyAuthentication(authentication.BaseAuthentication):
    """`x-api-key: <Better Auth API key>` owned by a user (the plugin's default references)."""

    def authenticate(self, request: Request) -> tuple[Principal, Any] | None:
        key = request.headers.get("x-api-key")
        if not key:
            return None
        if plugin_absent("apikey"):
            raise _failed("API keys are not accepted: the platform has no API key table.")
        row = ApiKey.objects.filter(key=api_key_hash(key)).first()
        if row is None or row.enabled is False:
            raise _failed("The API key is unknown or disabled.")
        if row.expires_at is not None and _aware(row.expires_at) <= timezone.now():
            raise _failed("The API key has expired.")
        if row.remaining is not None and row.remaining <= 0:
            raise _failed("The API key has used up its requests.")
        # Keys may belong to an organization (references: "organization"); only a user can own
        # a project here, so such a key is not a credential for the agent.
        if not User.objects.filter(id=row.reference_id).exists():
            raise _failed("The API key does not belong to a user.")
        principal = Principal(kind="api_key", name=row.start or row.id, user_id=row.reference_id)
        return principal, row


class IsAgentOrProjectOwner(permissions.BasePermission):
    """Authenticated; and when PROJECT_ID is set, a platform user must own that project.

    Which projects and buckets a request may touch is `weldr_agent.access.TenantAccess`'s
    (the next permission class); this one keeps PROJECT_ID's meaning, an agent serving one
    project: a user who does not own it may do nothing here (403 everywhere).
    """

    message = "You do not have access to this project."

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        if principal.is_platform_user and settings.PROJECT_ID:
            if not access.project_allowed(principal, settings.PROJECT_ID):
                raise exceptions.PermissionDenied(self.message, code="forbidden")
        return True
