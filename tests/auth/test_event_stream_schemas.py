"""Event streams are declared event by event, and the declarations accept what the agent sends.

The live streams are checked against the running agent in test_fuzz.py; these read the document
alone (no server) and feed it frames made by the agent's own SSE code.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from functools import cache

import httpx
import pytest
import schemathesis
from drf_spectacular.generators import SchemaGenerator
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from commands.execution import Event
from commands.output import exec_frames

STREAM = "text/event-stream"


@cache
def document() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def responses() -> list[tuple[str, str, str, dict]]:
    return [(method.upper(), path, code, response)
            for path, item in document()["paths"].items()
            for method, operation in item.items() if isinstance(operation, dict)
            for code, response in operation.get("responses", {}).items()]


def stream_responses() -> list[tuple[str, str, dict]]:
    return [(method, path, response["content"][STREAM]["schema"])
            for method, path, code, response in responses()
            if code.startswith("2") and STREAM in response.get("content", {})]


def test_the_agent_has_event_streams():
    assert {(method, path) for method, path, _ in stream_responses()} >= {
        ("POST", "/exec"), ("GET", "/exec/{exec_id}/logs"), ("GET", "/events"),
        ("GET", "/previews/{bucket}/logs")}


@pytest.mark.parametrize(("method", "path", "schema"), stream_responses(),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_event_stream_declares_each_event(method, path, schema):
    """One alternative per event name; its `data` is a JSON document with its own schema."""
    alternatives = schema.get("oneOf")
    assert alternatives, (method, path, schema)
    names = []
    for event in alternatives:
        assert event["required"] == ["event", "data"], (method, path, event)
        [name] = event["properties"]["event"]["enum"]
        names.append(name)
        data = event["properties"]["data"]
        assert data["contentMediaType"] == "application/json", (method, path, name)
        assert data["contentSchema"]["type"] == "object", (method, path, name)
    assert len(names) == len(set(names)), (method, path, names)


def test_errors_are_never_declared_as_event_streams():
    """An error is JSON whatever was asked for; an event's schema cannot describe it."""
    declared = [(method, path, code) for method, path, code, response in responses()
                if not code.startswith("2") and STREAM in response.get("content", {})]
    assert declared == []


def test_a_json_only_operation_does_not_offer_a_stream():
    detail = document()["paths"]["/exec/{exec_id}"]["get"]["responses"]["200"]
    assert list(detail["content"]) == ["application/json"]


async def _frames(events: list[Event]) -> bytes:
    async def source() -> AsyncIterator[Event]:
        for event in events:
            yield event

    return b"".join([frame async for frame in exec_frames(source())])


def validate_logs_body(body: bytes) -> None:
    operation = schemathesis.openapi.from_dict(document())["/exec/{exec_id}/logs"]["GET"]
    response = httpx.Response(200, headers={"content-type": STREAM}, content=body,
                              request=httpx.Request("GET", "http://agent/exec/x/logs"))
    response.elapsed = datetime.timedelta(0)
    operation.Case(path_parameters={"exec_id": "x"}).validate_response(
        response, checks=[response_schema_conformance])


def test_exec_events_as_the_agent_writes_them_match_the_declaration():
    # given: every kind of event, invalid UTF-8 output, and the exit of a command whose end
    # was not seen (the agent restarted: no exit code, no duration)
    body = asyncio.run(_frames([
        Event("start", info={"pid": 7}),
        Event("stdout", b"text\n"), Event("stderr", b"\xff\xfe not UTF-8\n"),
        Event("exit", info={"exit_code": None, "timed_out": False, "duration_ms": None}),
    ]))
    assert b"data_base64" in body
    # when / then
    validate_logs_body(body)


def test_an_event_unlike_its_declaration_is_caught():
    body = asyncio.run(_frames([Event("start", info={"process": 7})]))
    with pytest.raises(FailureGroup, match="SSE event violates schema"):
        validate_logs_body(body)
