"""Agent tokens (`manage.py create_api_token`) and the 401s of docs/api.md."""

from __future__ import annotations

from django.core.management import call_command
from django.utils import timezone

from weldr_agent.models import ApiToken


def test_no_credential_is_401_with_a_challenge(anon):
    response = anon.get("/whoami")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided.",
                               "code": "not_authenticated"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_valid_agent_token_is_accepted_and_named(api):
    response = api.get("/whoami")
    assert response.status_code == 200
    assert response.json() == {"kind": "agent_token", "name": "tests", "user_id": None}


def test_a_token_printed_by_the_command_works(anon, capsys):
    call_command("create_api_token", "--name", "operator")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    response = anon.get("/whoami", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert (response.status_code, response.json()["name"]) == (200, "operator")
    assert ApiToken.objects.get(name="operator").last_used_at is not None


def test_an_unknown_agent_token_is_401(anon, agent_token):
    response = anon.get("/whoami", HTTP_AUTHORIZATION=f"Bearer {agent_token}x")
    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
    assert "unknown or revoked" in response.json()["detail"]


def test_a_revoked_agent_token_is_401(anon, agent_token):
    assert anon.get("/whoami", HTTP_AUTHORIZATION=f"Bearer {agent_token}").status_code == 200
    assert ApiToken.objects.filter(name="tests").revoke() == 1
    response = anon.get("/whoami", HTTP_AUTHORIZATION=f"Bearer {agent_token}")
    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
    assert ApiToken.objects.get(name="tests").revoked_at <= timezone.now()


def test_garbage_in_the_authorization_header_is_401(anon):
    for header in ("Bearer not-a-credential", "Bearer eyJhbGciOi.eyJzdWIi.sig", "Basic dTpw"):
        response = anon.get("/whoami", HTTP_AUTHORIZATION=header)
        assert (response.status_code, response.json()["code"]) == (401, "not_authenticated"), \
            header


def test_health_and_documents_need_no_credential(anon):
    for path in ("/health", "/openapi.json", "/docs"):
        assert anon.get(path).status_code in (200, 503), path
