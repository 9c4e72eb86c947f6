"""Bad input gets its 4xx in the error shape, never a 500 (issue 2, "Bad input").

In-process through Django's test client, and over HTTP against a real `manage.py serve` (daphne),
since the body cap and the body parsing behave differently under ASGI.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import AgentProcess, running_agent

pytestmark = pytest.mark.urls("tests.auth.echo")


def post(client, body: bytes | str, content_type: str = "application/json"):
    return client.generic("POST", "/_test/echo", body, content_type=content_type)


def test_a_good_body_is_accepted(api):
    response = post(api, json.dumps({"name": "a", "count": 2, "options": {"flag": True}}))
    assert response.status_code == 200
    assert response.json() == {"name": "a", "count": 2, "options": {"flag": True}}


@pytest.mark.parametrize("body", ['{"name": ', "{'name': 'a'}", "\x00\xff", "[1, 2"])
def test_malformed_json_is_400_parse_error(api, body):
    response = post(api, body)
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert response.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"name": 5, "count": "many"}, "count"),
    ({"name": ["a"]}, "name"),
    ({"name": "a", "options": {"flag": "perhaps"}}, "options.flag"),
    ({"name": "a", "options": []}, "options.non_field_errors"),
    ({"name": "a", "tags": "x"}, "tags"),
    ({"name": "x" * 21}, "name"),
    ({}, "name"),
])
def test_wrong_types_are_400_invalid_naming_the_field(api, body, field):
    response = post(api, json.dumps(body))
    assert response.status_code == 400, response.content
    payload = response.json()
    assert payload["code"] == "invalid"
    assert field in payload["errors"], payload


@pytest.mark.parametrize("body", [[], "a string", 3, None])
def test_a_body_that_is_not_an_object_is_400_invalid(api, body):
    response = post(api, json.dumps(body))
    assert (response.status_code, response.json()["code"]) == (400, "invalid")


def test_unknown_fields_are_400_invalid(api):
    response = post(api, json.dumps({"name": "a", "nmae": "b", "options": {"flag": 1, "x": 2}}))
    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "invalid"
    assert payload["errors"] == {"nmae": ["Unknown field."]}
    # nested strict serializers refuse theirs too
    response = post(api, json.dumps({"name": "a", "options": {"flag": True, "x": 2}}))
    assert response.json()["errors"] == {"options.x": ["Unknown field."]}


def test_read_only_fields_sent_back_are_ignored(api):
    response = post(api, json.dumps({"name": "a", "id": "abc"}))
    assert (response.status_code, response.json()) == (200, {"name": "a"})


def test_a_wrong_content_type_is_415(api):
    response = post(api, "name=a", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_a_wrong_method_is_405_in_the_error_shape(api):
    response = api.delete("/_test/echo")
    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.',
                               "code": "method_not_allowed"}
    assert api.put("/health").status_code == 405


def test_an_oversized_body_is_413_in_the_error_shape(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = post(api, json.dumps({"name": "a", "tags": ["x" * 2000]}))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "1024" in response.json()["detail"]


def test_a_streaming_view_may_accept_larger_bodies(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.generic("PUT", "/_test/upload", b"x" * 5000,
                           content_type="application/octet-stream")
    assert (response.status_code, response.json()) == (200, {"bytes": 5000})


def test_the_body_cap_applies_before_authentication(anon, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = post(anon, "x" * 5000)
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")


# -------------------------------------------------------------------------------------------
# The same over HTTP, against daphne
# -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One real agent for the HTTP tests of this module (each sends its own requests; none
    changes the agent): the echo endpoint, a 64 KiB body cap, file uploads of at most 1 MiB."""
    yield from running_agent(tmp_path_factory.mktemp("bad-input-agent"),
                             DJANGO_SETTINGS_MODULE="tests.auth.echo_settings",
                             MAX_REQUEST_BODY_BYTES=str(64 * 1024),
                             FILE_UPLOAD_MAX_BYTES=str(1024 * 1024))


@pytest.fixture(scope="module")
def served(agent: AgentProcess) -> tuple[str, dict[str, str]]:
    """(url, headers with an agent token) of the module's agent."""
    token = agent.manage("create_api_token", "--name", "bad-input").stdout.split()[-1]
    return agent.url, {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_bad_input_over_http_is_4xx_json(served):
    url, auth = served
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
        cases = {
            "good": client.post("/_test/echo", json={"name": "a"}),
            "malformed": client.post("/_test/echo", content=b'{"name":',
                                     headers={"Content-Type": "application/json"}),
            "unknown": client.post("/_test/echo", json={"name": "a", "extra": 1}),
            "type": client.post("/_test/echo", json={"name": {"a": 1}}),
            "media": client.post("/_test/echo", content=b"name=a",
                                 headers={"Content-Type": "text/plain"}),
            "method": client.patch("/_test/echo", json={}),
            "too large": client.post("/_test/echo", json={"name": "a", "tags": ["x" * 70000]}),
            "no route": client.get("/nowhere"),
        }
    expected = {"good": (200, None), "malformed": (400, "parse_error"),
                "unknown": (400, "invalid"), "type": (400, "invalid"),
                "media": (415, "unsupported_media_type"), "method": (405, "method_not_allowed"),
                "too large": (413, "payload_too_large"), "no route": (404, "not_found")}
    for name, response in cases.items():
        assert response.headers["content-type"] == "application/json", name
        code = response.json().get("code") if response.status_code >= 400 else None
        assert (response.status_code, code) == expected[name], (name, response.text)


@pytest.mark.slow
def test_a_chunked_body_without_length_is_411_not_silently_empty(served):
    url, auth = served
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    connection.request("POST", "/_test/echo", body=iter([b'{"name": ', b'"a"}']),
                       headers={**auth, "Content-Type": "application/json"},
                       encode_chunked=True)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert (response.status, body["code"]) == (411, "length_required")


@pytest.mark.slow
def test_static_files_and_the_admin_are_served_by_the_async_middleware_chain(served):
    url, _ = served
    with httpx.Client(base_url=url, timeout=60) as client:
        css = client.get("/static/admin/css/base.css")
        login = client.get("/admin/login/")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert b"body" in css.content
    assert login.status_code == 200 and "csrftoken" in login.cookies


@pytest.fixture
def capped(agent: AgentProcess) -> tuple[str, int]:
    """(host, port) of the module's agent: bodies of at most 1 MiB anywhere (file uploads),
    64 KiB elsewhere."""
    host, port = agent.url.removeprefix("http://").split(":")
    return host, int(port)


def _response_of(sock: socket.socket) -> tuple[int, dict]:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "the agent closed the connection without an answer"
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
def test_a_huge_declared_body_is_refused_before_it_is_sent(capped):
    # given a request declaring 10 GB, of which not one byte is sent
    with socket.create_connection(capped, timeout=60) as sock:
        sock.sendall(b"POST /mounts HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 10000000000\r\n\r\n")
        # then the answer comes at once: nothing waits for (or spools) the body
        status, body = _response_of(sock)
    assert (status, body["code"]) == (413, "payload_too_large")


@pytest.mark.slow
def test_a_chunked_body_is_cut_off_at_the_largest_cap(capped):
    # given a chunked body that goes on past 1 MiB
    with socket.create_connection(capped, timeout=60) as sock:
        sock.sendall(b"POST /mounts HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        try:
            for _ in range(64):  # 4 MiB
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent stopped reading: expected
        # then it is refused with 413, not read to its end
        status, body = _response_of(sock)
    assert (status, body["code"]) == (413, "payload_too_large")
