"""/admin/: a superuser made by `manage.py createsuperuser` sees tokens and the platform's rows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from weldr_agent.models import ApiToken


@pytest.fixture
def admin_client(monkeypatch) -> Client:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-password-1")
    call_command("createsuperuser", interactive=False, username="ops", email="ops@example.com",
                 verbosity=0)
    client = Client()
    assert client.login(username="ops", password="a-long-enough-password-1")
    return client


def test_createsuperuser_writes_to_the_state_database(admin_client):
    assert get_user_model().objects.using("default").filter(username="ops",
                                                             is_superuser=True).exists()


def test_the_login_page_and_index_load(admin_client):
    assert Client().get("/admin/login/").status_code == 200
    index = admin_client.get("/admin/")
    assert index.status_code == 200
    for label in (b"Agent tokens", b"Users", b"Sessions", b"API keys"):
        assert label in index.content, label


def test_admin_forms_are_csrf_protected_and_the_api_needs_no_session(admin_client, anon):
    # the admin gets its sessions (AdminMiddleware) and its views check CSRF themselves
    browser = Client(enforce_csrf_checks=True)
    credentials = {"username": "ops", "password": "a-long-enough-password-1"}
    assert browser.post("/admin/login/", credentials).status_code == 403
    token = browser.get("/admin/login/").cookies["csrftoken"].value
    logged_in = browser.post("/admin/login/", {**credentials, "csrfmiddlewaretoken": token})
    assert logged_in.status_code == 302 and "sessionid" in logged_in.cookies
    assert browser.get("/admin/").status_code == 200
    # the API is not the admin: no session cookie, and the admin's session is no credential
    assert "sessionid" not in anon.get("/health").cookies
    assert browser.get("/mounts").status_code == 401


def test_the_changelists_load_with_real_rows(admin_client, better_auth, user):
    better_auth.api_key(user.user_id)
    ApiToken.issue("listed")
    pages = {
        "/admin/weldr_agent/apitoken/": b"listed",
        "/admin/betterauth/user/": user.user_id.encode(),
        "/admin/betterauth/session/": user.email.encode(),
        "/admin/betterauth/apikey/": user.user_id.encode(),
    }
    for url, expected in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert expected in response.content, url


def test_session_pages_never_show_the_token(admin_client, better_auth, user):
    from weldr_agent.betterauth.models import Session

    session = Session.objects.get(token=user.token)
    response = admin_client.get(f"/admin/betterauth/session/{session.pk}/change/")
    assert response.status_code == 200
    assert user.token.encode() not in response.content


def test_platform_rows_are_read_only(admin_client, user):
    assert admin_client.get("/admin/betterauth/user/add/").status_code == 403
    response = admin_client.post(f"/admin/betterauth/user/{user.user_id}/delete/", {"post": "yes"})
    assert response.status_code == 403


def test_tokens_are_revoked_from_the_changelist(admin_client, anon):
    row, token = ApiToken.issue("to-revoke")
    assert admin_client.get("/admin/weldr_agent/apitoken/add/").status_code == 403
    response = admin_client.post("/admin/weldr_agent/apitoken/", {
        "action": "revoke", "_selected_action": [row.pk],
    }, follow=True)
    assert b"Revoked 1 token" in response.content
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert anon.get("/whoami", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    # the hash is displayed read-only; the token itself is nowhere
    page = admin_client.get(f"/admin/weldr_agent/apitoken/{row.pk}/change/")
    assert row.token_hash.encode() in page.content and token.encode() not in page.content
