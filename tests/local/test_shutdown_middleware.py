"""From the first signal on, new requests are refused with 503 shutting_down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from weldr_agent import lifecycle


@pytest.fixture
def stopping() -> Iterator[None]:
    lifecycle.begin_shutdown()
    yield
    lifecycle._stopping.clear()


def test_requests_are_refused_while_shutting_down(api, anon, stopping):
    for client, url in ((anon, "/health"), (api, "/mounts")):
        response = client.get(url)
        assert response.status_code == 503
        assert response.json() == {
            "detail": "The agent is shutting down; retry on the next machine.",
            "code": "shutting_down",
        }


def test_requests_are_served_normally(anon):
    assert anon.get("/health").json().get("code") != "shutting_down"


def test_shutdown_runs_hooks_highest_order_first_and_reports_failures():
    calls: list[str] = []
    saved = dict(lifecycle._hooks)
    lifecycle._hooks.clear()
    try:
        lifecycle.register("low", order=1, shutdown=lambda d: calls.append("low"))
        lifecycle.register("high", order=9, shutdown=lambda d: calls.append("high"))

        def broken(deadline: float) -> None:
            calls.append("broken")
            raise RuntimeError("boom")

        lifecycle.register("mid", order=5, shutdown=broken)
        assert lifecycle.shutdown(10) is False
        assert calls == ["high", "broken", "low"]
        assert lifecycle.shutting_down()
    finally:
        lifecycle._hooks.clear()
        lifecycle._hooks.update(saved)
        lifecycle._stopping.clear()


def test_a_hook_past_the_deadline_does_not_hold_up_the_others():
    import threading

    release = threading.Event()
    calls: list[str] = []
    saved = dict(lifecycle._hooks)
    lifecycle._hooks.clear()
    try:
        lifecycle.register("stuck", order=9, shutdown=lambda d: release.wait(30))
        lifecycle.register("after", order=1, shutdown=lambda d: calls.append("after"))
        assert lifecycle.shutdown(0.5) is False
        assert calls == []  # the deadline passed while "stuck" ran: "after" was skipped
    finally:
        release.set()
        lifecycle._hooks.clear()
        lifecycle._hooks.update(saved)
        lifecycle._stopping.clear()
