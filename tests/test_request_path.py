"""The API's per-request path (docs/exec.md, "Measured"): request threads kept between
requests (weldr_agent/asgi_handler.py) and lookups compiled once (weldr_agent/prepared.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core import signals
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from mounts.models import Mount
from mounts.services import workspace_path
from tests import request_threads_urls
from weldr_agent.asgi_handler import IDLE_THREADS, PooledThreadsASGIHandler
from weldr_agent.errors import APIError
from weldr_agent.models import ApiToken
from weldr_agent.prepared import Prepared

# --------------------------------------------------------------------------------- threads


def _scope(query: str = "", path: str = "/thread") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": query.encode(), "headers": [(b"host", b"testserver")],
            "client": ("127.0.0.1", 1), "server": ("testserver", 80)}


async def _get(handler: PooledThreadsASGIHandler, query: str = "", path: str = "/thread") -> dict:
    communicator = ApplicationCommunicator(handler, _scope(query, path))
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = await communicator.receive_output(10)
    assert start["status"] == 200, body
    await communicator.wait(10)
    return json.loads(body["body"])


@override_settings(ROOT_URLCONF="tests.request_threads_urls")
def test_a_request_thread_serves_one_request_after_another():
    # given Django's handler with kept threads
    handler = PooledThreadsASGIHandler()

    async def main() -> tuple[dict, dict]:
        return await _get(handler), await _get(handler)

    # when two requests to a sync view come one after the other
    first, second = asyncio.run(main())

    # then the same kept thread served both (Django's own handler makes a thread per request)
    assert first["thread"].startswith("weldr-request")
    assert first["ident"] == second["ident"]


@pytest.fixture
def signalled() -> Iterator[list[tuple[str, str]]]:
    """(signal, thread name) of every request_started / request_finished received."""
    received: list[tuple[str, str]] = []

    def started(**kwargs: object) -> None:
        received.append(("started", threading.current_thread().name))

    def finished(**kwargs: object) -> None:
        received.append(("finished", threading.current_thread().name))

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    yield received
    signals.request_started.disconnect(started)
    signals.request_finished.disconnect(finished)


@override_settings(ROOT_URLCONF="tests.request_threads_urls")
def test_a_sync_view_gets_the_request_signals_in_its_own_thread(signalled):
    # when a sync view is served
    answer = asyncio.run(_get(PooledThreadsASGIHandler()))

    # then request_started came before it and request_finished after, both in its thread
    assert signalled == [("started", answer["thread"]), ("finished", answer["thread"])]


@override_settings(ROOT_URLCONF="tests.request_threads_urls")
def test_an_async_view_costs_no_trip_to_a_thread(signalled):
    # given a handler whose kept thread is busy with nothing
    handler = PooledThreadsASGIHandler()

    # when an async view (as POST /exec) is served
    answer = asyncio.run(_get(handler, path="/async-thread"))

    # then it ran on the event loop, and nothing was sent to the request's thread: the request
    # signals look after that thread's own state, which the request never touched
    assert answer["thread"] == "MainThread"
    assert signalled == []


@override_settings(ROOT_URLCONF="tests.request_threads_urls")
def test_requests_in_flight_at_once_never_share_a_thread():
    # given more requests at once than threads are kept, each held in its sync view
    handler = PooledThreadsASGIHandler()
    request_threads_urls.gate.clear()

    async def main() -> list[dict]:
        waiting = [asyncio.ensure_future(_get(handler, "wait=1"))
                   for _ in range(IDLE_THREADS + 2)]
        await asyncio.sleep(0.2)
        request_threads_urls.gate.set()
        return list(await asyncio.gather(*waiting))

    # when they are released together
    answers = asyncio.run(main())

    # then each had a thread of its own, and only IDLE_THREADS are kept afterwards
    assert len({answer["ident"] for answer in answers}) == IDLE_THREADS + 2
    assert len(handler.threads._idle) == IDLE_THREADS


@override_settings(ROOT_URLCONF="tests.request_threads_urls")
def test_a_request_cut_short_does_not_give_its_thread_back():
    # given a request held in its sync view
    handler = PooledThreadsASGIHandler()
    request_threads_urls.gate.clear()

    async def main() -> None:
        held = asyncio.ensure_future(_get(handler, "wait=1"))
        await asyncio.sleep(0.2)
        # when it is cancelled (daphne cancels a request whose client went away)
        held.cancel()
        request_threads_urls.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await held

    asyncio.run(main())

    # then its thread, not known to be idle, is not lent to the next request
    assert handler.threads._idle == []


# --------------------------------------------------------------------------------- lookups


@pytest.mark.django_db(databases=["default"])
def test_a_prepared_lookup_finds_what_the_orm_finds():
    # given two tokens, one of them revoked
    live, live_token = ApiToken.issue(f"live-{secrets.token_hex(3)}", buckets=["b1"])
    gone, gone_token = ApiToken.issue(f"gone-{secrets.token_hex(3)}")
    ApiToken.objects.filter(pk=gone.pk).revoke()

    # when each is looked up through the compiled query, twice (the second run reuses it)
    for _ in range(2):
        found = ApiToken.objects.find(live_token)
        # then the live one comes back whole (JSON and dates converted as by the ORM)
        assert found is not None and found.pk == live.pk and found.buckets == ["b1"]
        assert found.created_at == ApiToken.objects.get(pk=live.pk).created_at
        assert ApiToken.objects.find(gone_token) is None
        assert ApiToken.objects.find("wat_unknown") is None


@pytest.mark.django_db(databases=["default"])
def test_a_token_revoked_between_two_requests_is_refused_by_the_second():
    # given a token that was just found (its query compiled and run)
    row, token = ApiToken.issue(f"soon-{secrets.token_hex(3)}")
    assert ApiToken.objects.find(token) is not None

    # when it is revoked
    ApiToken.objects.filter(pk=row.pk).revoke()

    # then the very next lookup refuses it: nothing is cached but the SQL
    assert ApiToken.objects.find(token) is None


@pytest.mark.django_db(databases=["default"])
def test_the_mount_lookup_sees_only_mounted_buckets():
    Mount.objects.create(bucket="prep-mounted", status=Mount.Status.MOUNTED, cache_size_mb=1,
                         buffer_size_mb=1)
    Mount.objects.create(bucket="prep-mounting", status=Mount.Status.MOUNTING, cache_size_mb=1,
                         buffer_size_mb=1)
    assert workspace_path("prep-mounted").name == "prep-mounted"
    with pytest.raises(APIError) as refused:
        workspace_path("prep-mounting")
    assert refused.value.default_code == "not_mounted"


def test_a_parameter_the_orm_rewrites_is_refused():
    # `__contains` wraps the value in %…%: it cannot be swapped in the compiled SQL
    prepared = Prepared(ApiToken, lambda name: ApiToken.objects.filter(name__contains=name),
                        "name")
    with pytest.raises(ImproperlyConfigured, match="not plain parameters"):
        prepared.first(name="x")


# ----------------------------------------------------------------------------- negotiation

NEGOTIATED_ACCEPTS = [None, "*/*", "", "application/json", "text/event-stream",
                      "*/*;q=0.5, text/event-stream", "text/*", "image/png", "*/*; q=1"]


@pytest.mark.parametrize("query", ["", "?format=json", "?format=sse"])
@pytest.mark.parametrize("accept", NEGOTIATED_ACCEPTS)
def test_negotiation_answers_as_drf_answers(accept, query):
    from django.http import Http404
    from rest_framework.exceptions import NotAcceptable
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.renderers import JSONRenderer
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from weldr_agent.negotiation import ContentNegotiation
    from weldr_agent.sse import EventStreamRenderer

    # given a request with this Accept header (or none) and a view's renderers
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get(f"/exec{query}", **headers))
    for renderers in ([JSONRenderer(), EventStreamRenderer()], [JSONRenderer()]):
        # when ours and DRF's negotiation choose
        answers = []
        for negotiation in (ContentNegotiation(), DefaultContentNegotiation()):
            try:
                renderer, media_type = negotiation.select_renderer(request, renderers)
                answers.append((type(renderer), media_type))
            except NotAcceptable:
                answers.append("406")
            except Http404:  # ?format= naming no renderer of the view
                answers.append("404")
        # then they choose alike: the fast path changes no answer
        assert answers[0] == answers[1], (accept, query, renderers)


# ---------------------------------------------------------------------------- serializers


def test_shallow_copied_fields_are_the_instances_own():
    from commands.serializers import ExecRequestSerializer

    # given two exec requests validated while both serializers are alive
    first = ExecRequestSerializer(data={"bucket": "bucket-one", "command": "true",
                                        "env": {"A": "1"}})
    second = ExecRequestSerializer(data={"bucket": "bucket-two", "command": ["ls", "-l"],
                                         "timeout": "x", "env": {"1BAD": "v"}})
    assert first.is_valid() and not second.is_valid()

    # then each has its own fields, bound to itself; the declared ones stay unbound
    assert first.validated_data["bucket"] == "bucket-one"
    assert first.validated_data["env"] == {"A": "1"}
    assert set(second.errors) == {"timeout", "env"}
    for name, field in first.fields.items():
        assert field.parent is first and second.fields[name].parent is second
        assert field is not second.fields[name]
        declared = ExecRequestSerializer._declared_fields[name]
        assert field is not declared and declared.parent is None
    # and a third, after them, validates as the first did
    third = ExecRequestSerializer(data={"bucket": "bucket-three", "command": "true"})
    assert third.is_valid(), third.errors
    assert third.validated_data["timeout"] == 60 and third.validated_data["env"] == {}


# ------------------------------------------------------------------------------------ URLs


def test_each_route_resolves_to_its_own_apps_view_whatever_the_includes_order():
    import re
    from importlib import import_module

    from django.urls import resolve

    # given every route of the project's apps, as a path (each converter filled in)
    for app in ("commands", "mounts", "egress", "previews", "workflows"):
        for pattern in import_module(f"{app}.urls").urlpatterns:
            sample = "/" + re.sub(r"<(?:\w+:)?\w+>", "x-1", str(pattern.pattern))
            # when it is resolved: then the app that declares it answers, not an include
            # looked at before it (weldr_agent/urls.py puts the hottest first)
            assert resolve(sample).func.__module__.split(".")[0] == app, sample
