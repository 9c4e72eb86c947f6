"""Schemathesis over /openapi.json against a real agent: no 5xx, nothing contradicting the schema.

Every operation the agent documents becomes one test item (listed from the schema at collection
time, so endpoints added by any app are fuzzed without touching this file). Per operation:

- GET/HEAD: positive (schema-valid) and negative (schema-invalid) data;
- POST/PUT/PATCH/DELETE: negative data only. Valid data would really mount buckets, start
  containers and run commands with random names; those paths have their own tests. Invalid data
  must be refused before any side effect, which is exactly what this checks.
- operations whose success is an event stream (`text/event-stream`): negative data only, since
  a valid request opens a stream that does not end; real streams are checked below.

Checks (explicit, so a schemathesis upgrade cannot silently change them): not_a_server_error,
status_code_conformance (every status is documented), content_type_conformance,
response_headers_conformance, response_schema_conformance (the body matches the documented
schema, errors included; an event stream is parsed and each event checked against the schema
the response declares for one event, its JSON `data` included, see weldr_agent.schema) and
negative_data_rejection (invalid input gets a 4xx).

Beyond one operation at a time, as an outside fuzzer run does:

- every documented path answers OPTIONS (never a 5xx; `Allow` lists exactly its documented
  methods) and an undocumented method with 405 and `Allow`;
- the stateful phase: schemathesis chains operations along the links it infers from the
  document (a project's id into its branches, a branch's into runs, ...), with valid data, over
  the operations whose valid calls only touch the database (STATEFUL); every creation (201) is
  sent a second time, so that a duplicate's answer (409) is checked as well;
- real event streams: POST /exec with `Accept: text/event-stream`, a background command's
  /exec/{id}/logs (on a really mounted bucket) and a branch's /events, validated event by event.

Bounded: WELDR_FUZZ_EXAMPLES examples per operation and mode (default 15), WELDR_FUZZ_SCENARIOS
stateful scenarios (default 25) of at most 6 steps, deterministic (derandomized, no example
database), no shrinking.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from functools import cache

import httpx
import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
MAX_EXAMPLES = int(os.environ.get("WELDR_FUZZ_EXAMPLES", "15"))
SCENARIOS = int(os.environ.get("WELDR_FUZZ_SCENARIOS", "25"))
SAFE_METHODS = {"GET", "HEAD"}
HTTP_METHODS = {"get", "head", "post", "put", "patch", "delete"}
# Operations whose valid calls change nothing but database rows (or nothing at all): the
# stateful phase sends them valid data. The others (mounts, previews, commands, runs of the AI,
# the never-ending /events) are fuzzed with invalid data above and have their own tests.
STATEFUL = {
    ("GET", "/whoami"), ("GET", "/health"), ("GET", "/health/live"),
    ("GET", "/projects"), ("POST", "/projects"),
    ("GET", "/projects/{project_id}/branches"), ("POST", "/projects/{project_id}/branches"),
    ("GET", "/runs"), ("GET", "/runs/{run_id}"),
    ("GET", "/exec/{exec_id}"), ("DELETE", "/exec/{exec_id}"), ("GET", "/exec/{exec_id}/logs"),
    ("GET", "/mounts"), ("GET", "/mounts/{bucket}"), ("GET", "/mounts/{bucket}/egress"),
    ("GET", "/previews"), ("GET", "/previews/{bucket}"),
}


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


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def probe_parameters(path: str) -> dict[str, str]:
    """A value for each path parameter: well-formed, naming nothing that exists."""
    return {name: "fuzz-probe" for name in re.findall(r"{(\w+)}", path)}


def documented_paths() -> list[str]:
    return sorted({path for _method, path in documented_operations()})


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


@pytest.mark.slow
@pytest.mark.parametrize("path", documented_paths())
def test_options_and_undocumented_methods(live, path):
    """OPTIONS answers (no 5xx) with `Allow` = the documented methods; others get 405."""
    schema, url, token = live
    documented = {method for method, item_path in documented_operations() if item_path == path}
    operation = schema[path][sorted(documented)[0]]
    # when
    case = operation.Case(method="OPTIONS", path_parameters=probe_parameters(path))
    response = case.call_and_validate(base_url=url, headers=auth(token), timeout=30,
                                      checks=[not_a_server_error, allow_header_conformance])
    # then
    assert response.status_code == 200, (path, response.status_code, response.text)
    allowed = {m.strip() for m in response.headers["allow"][0].split(",")}
    assert allowed - {"OPTIONS", "HEAD"} == documented - {"HEAD"}, (path, allowed)
    for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - documented):
        refused = operation.Case(method=method, path_parameters=probe_parameters(path)).call(
            base_url=url, headers=auth(token), timeout=30)
        assert refused.status_code == 405, (method, path, refused.status_code, refused.text)
        assert refused.json()["code"] == "method_not_allowed"
        assert refused.headers.get("allow"), (method, path)


@pytest.mark.slow
def test_stateful_phase(live):
    """Chains of valid calls along the document's links conform, 4xx included."""
    schema, url, token = live
    subset = schema.include(lambda ctx: (ctx.operation.method.upper(), ctx.operation.path)
                            in STATEFUL)

    failures: list[str] = []
    seen: list[tuple[str, str, int]] = []

    class Workflow(subset.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": url, "headers": auth(token), "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            self.check(response, case, kwargs)
            if case.method == "POST" and response.status_code == 201:
                # The same creation again: a duplicate must get a documented answer too (a
                # conflict is only reached by repeating what just succeeded).
                self.check(case.call(**kwargs), case, kwargs)

        def check(self, response, case, kwargs):
            # Recorded here rather than raised: the agent's state grows from one scenario to
            # the next, so Hypothesis cannot replay a scenario the same way (see below).
            seen.append((case.method, case.path, response.status_code))
            try:
                case.validate_response(response, checks=CHECKS[:-1], transport_kwargs=kwargs)
            except Exception as failure:  # a FailureGroup: every check that failed
                failures.append(f"{case.method} {case.path}: {failure}")

    # given: links along which identifiers flow (project -> branches -> runs)
    transitions = [name for name in dir(Workflow) if "__" in name and name[0].isupper()]
    assert any("POST_projects___201" in name and "POST_projects_project_id_branches" in name
               for name in transitions), transitions
    # when
    try:
        Workflow.run(settings=settings(max_examples=SCENARIOS, stateful_step_count=6,
                                       deadline=None, database=None, derandomize=True,
                                       phases=[Phase.explicit, Phase.generate],
                                       suppress_health_check=list(HealthCheck)))
    except FlakyStrategyDefinition:
        # A replayed scenario met other responses (the project it listed has more branches
        # now): the scenarios run so far still count, and are checked below.
        pass
    # then
    assert not failures, "\n\n".join(failures[:5])
    assert len(seen) >= SCENARIOS, seen
    assert ("POST", "/projects/{project_id}/branches", 201) in seen, seen
    assert ("POST", "/projects/{project_id}/branches", 409) in seen, seen


@pytest.fixture(scope="module")
def bucket(live) -> Iterator[str]:
    """A really mounted bucket in the fuzzed agent (JuiceFS over the test S3 server)."""
    _schema, url, token = live
    name = f"fuzz-{secrets.token_hex(3)}"
    with httpx.Client(base_url=url, headers=auth(token), timeout=180) as http:
        response = http.post("/mounts", json={"bucket": name})
        assert response.status_code in (200, 201), response.text
        try:
            yield name
        finally:
            http.post("/mounts/unmount", json={"bucket": name, "force": True})


# Text, an invalid UTF-8 byte (so `data_base64`), and a line on stderr.
OUTPUT_COMMAND = "printf 'out\\n'; printf 'err\\n' >&2; printf 'bad \\377\\n'"


@pytest.mark.slow
def test_exec_event_stream_conforms(live, bucket):
    schema, url, token = live
    case = schema["/exec"]["POST"].Case(
        body={"bucket": bucket, "command": OUTPUT_COMMAND},
        headers={"Accept": "text/event-stream"}, media_type="application/json")
    response = case.call_and_validate(base_url=url, headers=auth(token), checks=CHECKS[:-1],
                                      timeout=60)
    assert response.headers["content-type"][0].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)$", response.text, re.MULTILINE)
    assert events[0] == "start" and events[-1] == "exit" and "stderr" in events, events
    assert "data_base64" in response.text


@pytest.mark.slow
def test_background_exec_logs_conform(live, bucket):
    schema, url, token = live
    started = schema["/exec"]["POST"].Case(
        body={"bucket": bucket, "command": OUTPUT_COMMAND, "background": True},
        media_type="application/json").call_and_validate(
        base_url=url, headers=auth(token), checks=CHECKS[:-1], timeout=60)
    assert started.status_code == 202, started.text
    exec_id = started.json()["id"]
    logs = schema["/exec/{exec_id}/logs"]["GET"].Case(
        path_parameters={"exec_id": exec_id}).call_and_validate(
        base_url=url, headers=auth(token), checks=CHECKS[:-1], timeout=60)
    assert re.findall(r"^event: (\w+)$", logs.text, re.MULTILINE)[-1] == "exit", logs.text
    for method in ("GET", "DELETE"):
        schema["/exec/{exec_id}"][method].Case(path_parameters={"exec_id": exec_id}) \
            .call_and_validate(base_url=url, headers=auth(token), checks=CHECKS[:-1], timeout=30)


def read_events_until(response: httpx.Response, last: str) -> bytes:
    """The raw stream up to and including the first event named `last` (the stream goes on)."""
    raw, ended = b"", False
    for line in response.iter_lines():
        raw += line.encode() + b"\n"
        ended = ended or line == f"event: {last}"
        if ended and line == "":
            return raw
    raise AssertionError(f"the stream closed before `{last}`:\n{raw.decode()}")


@pytest.mark.slow
def test_branch_event_stream_conforms(live, bucket):
    """GET /events of a branch with a run (that fails at once: its model has no provider)."""
    schema, url, token = live
    with httpx.Client(base_url=url, headers=auth(token), timeout=30) as http:
        # given
        project = http.post("/projects", json={"name": "fuzz-events"}).json()
        branch = http.post(f"/projects/{project['id']}/branches",
                           json={"name": "main", "bucket": bucket}).json()
        query = {"project_id": project["id"], "branch_id": branch["id"]}
        replay = {**query, "last_event_id": 0}  # from the first event
        triggered = http.post("/trigger", json={
            **query, "model": "fuzz/no-such-provider",
            "message": {"content": [{"type": "text", "text": "Add a page"}]}})
        assert triggered.status_code == 202, triggered.text
        # when: read as a browser's EventSource would, until the run's end
        with http.stream("GET", "/events", params=replay,
                         headers={"Accept": "text/event-stream"}) as streaming:
            raw = read_events_until(streaming, "run.failed")
    # What was read, as a response of its own (the stream itself never ends).
    response = httpx.Response(streaming.status_code, headers=streaming.headers, content=raw,
                              request=streaming.request)
    response.elapsed = streaming.elapsed
    # then
    case = schema["/events"]["GET"].Case(query=replay, headers={"Accept": "text/event-stream"})
    case.validate_response(response, checks=CHECKS[:-1])
    assert re.findall(r"^event: ([\w.]+)$", raw.decode(), re.MULTILINE) == [
        "run.queued", "run.started", "run.failed"], raw
