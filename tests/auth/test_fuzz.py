"""Schemathesis over /openapi.json against a real agent: no 5xx, nothing contradicting the schema.

Every operation the agent documents becomes one test item (listed from the schema at collection
time, so endpoints added by any app are fuzzed without touching this file). Per operation:

- GET/HEAD: positive (schema-valid) and negative (schema-invalid) data;
- POST/PUT/PATCH/DELETE: negative data only. Valid data would really mount buckets, start
  containers and run commands with random names; those paths have their own tests. Invalid data
  must be refused before any side effect, which is exactly what this checks.
- operations whose success is an event stream (`text/event-stream`): negative data only, since
  a valid request opens a stream that does not end; their streams have their own tests.

Checks (explicit, so a schemathesis upgrade cannot silently change them): not_a_server_error,
status_code_conformance (every status is documented), content_type_conformance,
response_headers_conformance, response_schema_conformance (the body matches the documented
schema, errors included) and negative_data_rejection (invalid input gets a 4xx).

Bounded: WELDR_FUZZ_EXAMPLES examples per operation and mode (default 15), deterministic
(derandomized, no example database), no shrinking.
"""

from __future__ import annotations

import os
from functools import cache

import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
MAX_EXAMPLES = int(os.environ.get("WELDR_FUZZ_EXAMPLES", "15"))
SAFE_METHODS = {"GET", "HEAD"}
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete"}


@cache
def _document() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def documented_operations() -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, item in _document()["paths"].items()
                  for method in item if method in HTTP_METHODS)


def streaming_operations() -> set[tuple[str, str]]:
    """Operations with a `text/event-stream` success response."""
    return {(method.upper(), path) for path, item in _document()["paths"].items()
            for method, operation in item.items() if method in HTTP_METHODS
            and any(code.startswith("2") and "text/event-stream" in response.get("content", {})
                    for code, response in operation.get("responses", {}).items())}


STREAMING = streaming_operations()


def has_inputs(operation) -> bool:
    parameters = (operation.path_parameters, operation.query, operation.headers,
                  operation.cookies)
    return bool(operation.body) or any(len(group) for group in parameters)


@pytest.fixture(scope="module")
def live(module_agent):
    url, token = module_agent
    return schemathesis.openapi.from_url(f"{url}/openapi.json"), url, token


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), documented_operations(),
                         ids=lambda value: value)
def test_fuzz_operation(live, method, path):
    schema, url, token = live
    operation = schema[path][method]
    positive = method in SAFE_METHODS and (method, path) not in STREAMING
    modes = [GenerationMode.POSITIVE] if positive else []
    # With no parameters and no body, there is nothing to make invalid.
    if has_inputs(operation):
        modes.append(GenerationMode.NEGATIVE)
    assert modes, f"{method} {path}: nothing to fuzz (no input, and valid calls are not safe)"
    for mode in modes:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                   checks=CHECKS, timeout=30)

        run()


def test_the_fuzzer_sees_the_operations_the_agent_serves(live):
    schema, _url, _token = live
    served = {(result.ok().method.upper(), result.ok().path)
              for result in schema.get_all_operations()}
    assert served == set(documented_operations())
    assert ("GET", "/whoami") in served
