"""Every SSE endpoint speaks the specification a browser and a proxy expect: UTF-8 declared,
no caching or buffering, `retry:` first, comment keep-alives while quiet; and exec output
resumed in the middle of a character comes out whole."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Site
from tests.browser.test_follow import mounted

pytestmark = pytest.mark.timeout(300)

SILENT_SERVER = ("node -e 'require(\"http\").createServer((q, s) => s.end(\"ok\"))"
                 ".listen(+process.env.PORT, process.env.HOST)'")


def stream_head(http: httpx.Client, method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[httpx.Headers, list[str]]:
    """The response headers and the lines up to the first keep-alive comment (at most 15 s)."""
    lines: list[str] = []
    deadline = time.monotonic() + 15
    with http.stream(method, path, json=body, headers={"Accept": "text/event-stream"},
                     timeout=httpx.Timeout(20)) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            lines.append(line)
            if line == ": keep-alive" or time.monotonic() > deadline:
                break
        return reply.headers, lines


def assert_spoken_to_spec(headers: httpx.Headers, lines: list[str]) -> None:
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache, no-transform"
    assert headers["x-accel-buffering"] == "no"
    assert lines[:2] == ["retry: 1000", ""]
    assert lines[-1] == ": keep-alive", lines


def test_events_speak_the_spec(site: Site) -> None:
    project = site.http.post("/projects", json={"name": "spec"}).json()
    branch = site.http.post(f"/projects/{project['id']}/branches",
                            json={"name": "main", "bucket": f"sp-{secrets.token_hex(4)}"}).json()
    assert_spoken_to_spec(*stream_head(
        site.http, "GET", f"/events?project_id={project['id']}&branch_id={branch['id']}"))


def test_exec_streams_speak_the_spec(site: Site) -> None:
    bucket = mounted(site)
    # A command quiet for longer than SSE_KEEPALIVE_SECONDS (1 s for this agent).
    headers, lines = stream_head(site.http, "POST", "/exec",
                                 {"bucket": bucket, "command": "sleep 2; echo done"})
    assert_spoken_to_spec(headers, lines)
    started = site.http.post("/exec", json={"bucket": bucket, "background": True,
                                            "command": "sleep 2; echo done"})
    assert started.status_code == 202, started.text
    assert_spoken_to_spec(*stream_head(site.http, "GET", f"/exec/{started.json()['id']}/logs"))


def test_preview_logs_speak_the_spec(site: Site, ports_lock: None) -> None:
    bucket = mounted(site)
    preview = site.http.post("/previews/start", json={"bucket": bucket,
                                                      "command": SILENT_SERVER})
    assert preview.status_code == 201, preview.text
    try:
        assert_spoken_to_spec(*stream_head(site.http, "GET", f"/previews/{bucket}/logs"))
    finally:
        assert site.http.post("/previews/stop", json={"bucket": bucket}).status_code == 200


def test_exec_output_resumed_inside_a_character_comes_out_whole(site: Site) -> None:
    # given: a command whose "é" (C3 A9) arrives in two reads: event 1 holds C3, event 2 A9
    bucket = mounted(site)
    started = site.http.post("/exec", json={
        "bucket": bucket, "background": True,
        "command": "printf '\\303'; sleep 0.5; printf '\\251 done\\n'"})
    exec_id = started.json()["id"]
    path = f"/exec/{exec_id}/logs"
    with site.http.stream("GET", path) as reply:
        whole = [line for line in reply.iter_lines() if line.startswith(("id:", "data:"))]
    # the first stdout read gave no frame (an incomplete character), the second the whole "é"
    assert whole[2:4] == ["id: 2", 'data: {"data": "\\u00e9 done\\n"}'], whole

    # when: a client that had event 1 (the held-back byte) resumes after it
    with site.http.stream("GET", path, headers={"Last-Event-ID": "1"}) as reply:
        resumed = [json.loads(line[6:]) for line in reply.iter_lines()
                   if line.startswith("data:")]

    # then: the character is whole, not a replacement mark with base64 bytes
    assert resumed[0] == {"data": "é done\n"}, resumed
