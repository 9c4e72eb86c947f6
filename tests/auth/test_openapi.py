"""Every operation declares the errors the plumbing can answer, in the shared Error schema."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.urls("tests.auth.echo")
ERROR_REF = "#/components/schemas/Error"


def error_ref(operation: dict, status: int) -> str | None:
    response = operation["responses"].get(str(status))
    if response is None:
        return None
    return response["content"]["application/json"]["schema"]["$ref"]


def test_the_error_component_is_the_api_error_shape(anon):
    document = anon.get("/openapi.json").json()
    error = document["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"detail", "code", "errors"}
    assert set(error["required"]) == {"detail", "code"}


def test_authenticated_operations_declare_401_and_403(anon):
    document = anon.get("/openapi.json").json()
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == [{}] or path in ("/health", "/health/live"):
                continue
            checked += 1
            assert error_ref(operation, 401) == ERROR_REF, (method, path)
            assert error_ref(operation, 403) == ERROR_REF, (method, path)
    assert checked >= 2


def test_operations_with_a_body_declare_400_413_and_415(anon):
    document = anon.get("/openapi.json").json()
    echo = document["paths"]["/_test/echo"]["post"]
    for status in (400, 413, 415, 401, 403):
        assert error_ref(echo, status) == ERROR_REF, status
    whoami = document["paths"]["/whoami"]["get"]
    assert "400" not in whoami["responses"] and "200" in whoami["responses"]


def test_public_operations_declare_no_401(anon):
    health = anon.get("/openapi.json").json()["paths"]["/health"]["get"]
    assert set(health["responses"]) == {"200", "503"}
