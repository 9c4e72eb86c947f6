"""Platform credentials issued by the real Better Auth (npm better-auth 1.7.25) against the agent.

Every credential here comes from Better Auth itself: sign-up's Set-Cookie, its session token,
its /api/auth/token JWT, its api-key plugin; sessions are ended through its own sign-out.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from urllib.parse import unquote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from rest_framework.test import APIClient

from weldr_agent.betterauth.models import ApiKey, Session
from workflows.models import Project


@pytest.fixture
def platform(settings, better_auth):
    """The agent configured as the platform runs it: same secret, JWKS at BETTER_AUTH_URL."""
    settings.BETTER_AUTH_URL = better_auth.url
    return better_auth


def whoami(**credentials) -> tuple[int, dict]:
    client = APIClient()
    cookie = credentials.pop("cookie", None)
    if cookie is not None:
        client.cookies[credentials.pop("cookie_name", "better-auth.session_token")] = cookie
    response = client.get("/whoami", **credentials)
    return response.status_code, response.json()


def bearer(value: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {value}"}


def test_the_signed_cookie_from_sign_up_is_accepted(platform, user):
    status, body = whoami(cookie=user.cookie)
    assert status == 200, body
    assert body == {"kind": "session", "name": user.user_id, "user_id": user.user_id}


def test_the_secure_cookie_name_is_accepted(platform, user):
    status, body = whoami(cookie=user.cookie, cookie_name="__Secure-better-auth.session_token")
    assert (status, body["user_id"]) == (200, user.user_id)


def test_the_signed_bearer_is_accepted(platform, user):
    status, body = whoami(**bearer(unquote(user.cookie)))
    assert (status, body["kind"], body["user_id"]) == (200, "session", user.user_id)


def test_the_raw_bearer_is_accepted(platform, user):
    status, body = whoami(**bearer(user.token))
    assert (status, body["kind"], body["user_id"]) == (200, "session", user.user_id)


def test_the_jwt_from_better_auth_is_accepted_against_its_jwks(platform, user):
    token = platform.jwt(user.token)
    status, body = whoami(**bearer(token))
    assert status == 200, body
    assert body == {"kind": "jwt", "name": user.user_id, "user_id": user.user_id}


def test_an_api_key_is_accepted(platform, user):
    key = platform.api_key(user.user_id)
    status, body = whoami(HTTP_X_API_KEY=key)
    assert status == 200, body
    assert (body["kind"], body["user_id"], body["name"]) == ("api_key", user.user_id, key[:6])


def _tamper(signed: str) -> str:
    token, _, signature = unquote(signed).rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{token}.{flipped}"


@pytest.mark.parametrize("how", ["cookie", "bearer"])
def test_a_tampered_signature_is_401_and_better_auth_agrees(platform, user, how):
    tampered = _tamper(user.cookie)
    credentials = {"cookie": tampered} if how == "cookie" else bearer(tampered)
    status, body = whoami(**credentials)
    assert (status, body["code"]) == (401, "not_authenticated"), body
    headers = ({"Cookie": f"better-auth.session_token={tampered}"} if how == "cookie"
               else {"Authorization": f"Bearer {tampered}"})
    assert platform.get_session(headers) is None


def test_a_cookie_signed_with_another_secret_is_401(platform, user, settings):
    settings.BETTER_AUTH_SECRET = "not-the-platform-secret-0123456789abcdef"
    status, body = whoami(cookie=user.cookie)
    assert (status, body["code"]) == (401, "not_authenticated")


def test_an_expired_session_is_401(platform, user):
    # given a session whose expiry has passed
    Session.objects.filter(token=user.token).update(expires_at=timezone.now() - timedelta(1))
    # then none of its forms is a credential any more
    for credentials in ({"cookie": user.cookie}, bearer(user.token), bearer(unquote(user.cookie))):
        status, body = whoami(**credentials)
        assert (status, body["code"]) == (401, "not_authenticated"), credentials


def test_a_session_ended_by_better_auths_sign_out_is_401(platform, user):
    assert whoami(**bearer(user.token))[0] == 200
    platform.sign_out(user.token)
    assert not Session.objects.filter(token=user.token).exists()
    for credentials in ({"cookie": user.cookie}, bearer(user.token)):
        status, body = whoami(**credentials)
        assert (status, body["code"]) == (401, "not_authenticated"), credentials


def _jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


@pytest.mark.parametrize("same_kid", [True, False])
def test_a_jwt_signed_by_another_key_is_401(platform, user, same_kid):
    real = platform.jwt(user.token)
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = _jwt_header(real)["kid"] if same_kid else "some-other-key"
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                        headers={"kid": kid})
    status, body = whoami(**bearer(forged))
    assert (status, body["code"]) == (401, "not_authenticated"), body


def test_an_expired_jwt_is_401(platform, user):
    now = int(time.time())
    token = platform.sign_jwt({"sub": user.user_id, "iat": now - 3600, "exp": now - 60})
    status, body = whoami(**bearer(token))
    assert (status, body["code"]) == (401, "not_authenticated")
    assert "expired" in body["detail"].lower()


def test_a_jwt_for_another_audience_is_401(platform, user):
    token = platform.sign_jwt({"sub": user.user_id, "aud": "https://elsewhere.example"})
    status, body = whoami(**bearer(token))
    assert (status, body["code"]) == (401, "not_authenticated")


def test_a_jwt_without_a_configured_platform_url_is_401(platform, user, settings):
    token = platform.jwt(user.token)
    settings.BETTER_AUTH_URL = ""
    status, body = whoami(**bearer(token))
    assert (status, body["code"]) == (401, "not_authenticated")
    assert "BETTER_AUTH_URL" in body["detail"]


def test_an_unreachable_jwks_is_503_not_a_verdict_on_the_caller(platform, user, settings):
    token = platform.jwt(user.token)
    settings.BETTER_AUTH_URL = "http://127.0.0.1:9"
    status, body = whoami(**bearer(token))
    assert (status, body["code"]) == (503, "jwks_unavailable")


def test_unknown_expired_disabled_and_used_up_api_keys_are_401(platform, user):
    assert whoami(HTTP_X_API_KEY="not-a-key-at-all")[0] == 401
    for change in ({"expires_at": timezone.now() - timedelta(seconds=1)}, {"enabled": False},
                   {"remaining": 0}):
        key = platform.api_key(user.user_id)
        assert whoami(HTTP_X_API_KEY=key)[0] == 200
        ApiKey.objects.filter(reference_id=user.user_id, start=key[:6]).update(**change)
        status, body = whoami(HTTP_X_API_KEY=key)
        assert (status, body["code"]) == (401, "not_authenticated"), change


@pytest.fixture
def project(settings, user):
    """This machine's project, owned by `user`."""
    row = Project.objects.create(name="site", owner_id=user.user_id)
    settings.PROJECT_ID = row.id
    return row


def _every_credential(platform, signed_up) -> dict[str, dict]:
    return {
        "cookie": {"cookie": signed_up.cookie},
        "raw bearer": bearer(signed_up.token),
        "signed bearer": bearer(unquote(signed_up.cookie)),
        "jwt": bearer(platform.jwt(signed_up.token)),
        "api key": {"HTTP_X_API_KEY": platform.api_key(signed_up.user_id)},
    }


def test_the_owner_of_project_id_gets_through_with_every_credential(platform, user, project):
    for kind, credentials in _every_credential(platform, user).items():
        status, body = whoami(**credentials)
        assert (status, body.get("user_id")) == (200, user.user_id), kind


def test_another_user_is_403_forbidden_with_every_credential(platform, project):
    stranger = platform.sign_up()
    for kind, credentials in _every_credential(platform, stranger).items():
        status, body = whoami(**credentials)
        assert (status, body["code"]) == (403, "forbidden"), kind


def test_agent_tokens_are_not_subject_to_project_ownership(api, project):
    response = api.get("/whoami")
    assert response.status_code == 200
    assert response.json()["kind"] == "agent_token"


def test_a_cookie_request_from_a_foreign_origin_is_refused(platform, user):
    client = APIClient()
    client.cookies["better-auth.session_token"] = user.cookie
    foreign = client.post("/whoami", HTTP_ORIGIN="https://evil.example")
    assert (foreign.status_code, foreign.json()["code"]) == (403, "forbidden")
    # the same request from the platform's own origin reaches the view (whoami is GET-only)
    allowed = client.post("/whoami", HTTP_ORIGIN="http://localhost:3000")
    assert (allowed.status_code, allowed.json()["code"]) == (405, "method_not_allowed")
    # and from the agent's own pages served over TLS by a proxy (the request itself is http)
    own = client.post("/whoami", HTTP_ORIGIN="https://agent.example", HTTP_HOST="agent.example")
    assert (own.status_code, own.json()["code"]) == (405, "method_not_allowed")


def test_a_bearer_wins_over_a_stale_cookie(platform, user):
    stale = platform.sign_up()
    platform.sign_out(stale.token)
    status, body = whoami(cookie=stale.cookie, **bearer(user.token))
    assert (status, body["user_id"]) == (200, user.user_id)
