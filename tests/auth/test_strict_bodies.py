"""Every JSON request body is checked for fields the endpoint does not have (docs/foundation.md,
"Bad input"): a typo such as `"cdw"` for `"cwd"` in POST /exec is a 400 naming it, never a
default silently used in its place."""

from __future__ import annotations

import json
import re

import pytest


def json_bodies() -> tuple[list[tuple[str, str, str]], dict]:
    """(method, path, the body's component) of every operation with a JSON body, and the
    document's components."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    bodies = sorted(
        (method.upper(), path, body["schema"]["$ref"].rsplit("/", 1)[-1])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if (body := operation.get("requestBody", {}).get("content", {}).get("application/json")))
    return bodies, schema["components"]["schemas"]


# Committed (transaction=True): POST /exec authenticates on a database thread of its own.
@pytest.mark.django_db(transaction=True, databases=["default", "shared"])
@pytest.mark.parametrize(("method", "path"),
                         [(method, path) for method, path, _ in json_bodies()[0]])
def test_an_unknown_field_is_400_naming_it(api, method, path):
    from workflows.models import Project

    Project.objects.create(id="strict-x", name="strict", owner_id="owner-1")  # its branches
    url = re.sub(r"\{[^}]+\}", "strict-x", path)
    response = api.generic(method, url, json.dumps({"not_a_field": 1}),
                           content_type="application/json")
    assert response.status_code == 400, (path, response.content)
    assert response.json()["errors"] == {"not_a_field": ["Unknown field."]}, path


def test_the_document_says_so_for_every_json_body():
    bodies, components = json_bodies()
    for method, path, name in bodies:
        assert components[name]["additionalProperties"] is False, (method, path)
