"""A preview's netns gets its bucket's egress chain, warm or cold, and loses it when it ends.

What the chains do to real traffic is tests/security/test_egress.py's; this checks the plumbing
of both start paths (a warm sandbox is assigned its bucket after it was made) in the real
iptables of this machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from egress import services as egress_services
from egress.policy import slot_chain
from previews import services
from sandbox import warm
from tests.previews.conftest import http_get, write_node_app
from weldr_agent import runner

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

ALLOWED = "198.51.100.77/32"


def chain(slot: int, binary: str = "iptables") -> list[str]:
    listed = runner.run([binary, "-w", "10", "-S", slot_chain(settings.INSTANCE_ID, slot)],
                        timeout=30, check=False)
    return listed.stdout.splitlines()[1:]


@pytest.mark.parametrize("path", ["warm", "cold"])
def test_a_previews_chain_holds_its_buckets_policy_and_follows_its_changes(
        api: APIClient, previews: None, workspace: Path, path: str, settings) -> None:  # type: ignore[no-untyped-def]
    # given a bucket allowing one address only
    if path == "warm":
        warm.warm_pool.start()
        assert runner.wait_until(lambda: warm.warm_pool.ready_count() > 0, timeout=120)
    else:
        settings.PREVIEW_WARM_POOL = 0
    put = api.put(f"/mounts/{workspace.name}/egress",
                  {"mode": "allowlist", "allow": [ALLOWED]}, format="json")
    assert put.status_code == 200, put.json()
    write_node_app(workspace)

    # when its preview starts
    body = api.post("/previews/start", {"bucket": workspace.name, "command": "node server.js"},
                    format="json").json()
    assert http_get(f"http://127.0.0.1:{body['port']}/")[0] == 200
    live = services._live[workspace.name]
    assert (live.warm is not None) == (path == "warm")
    assert live.ns is not None
    slot = live.ns.slot

    # then its slot's chains hold the policy, IPv4 and IPv6, ending in a reject
    rules = chain(slot)
    assert f"-A {slot_chain(settings.INSTANCE_ID, slot)} -d {ALLOWED} -j ACCEPT" in rules
    assert rules[-1].endswith("-j REJECT --reject-with icmp-admin-prohibited")
    assert chain(slot, "ip6tables")[-1].endswith("-j REJECT --reject-with icmp6-adm-prohibited")

    # when the policy changes while it runs: applied at once
    assert api.put(f"/mounts/{workspace.name}/egress", {"mode": "none"},
                   format="json").status_code == 200
    assert chain(slot) == [f"-A {slot_chain(settings.INSTANCE_ID, slot)} "
                           "-j REJECT --reject-with icmp-admin-prohibited"]

    # when it stops: the slot leaves the bucket (emptied, then made afresh with the default),
    # and the bucket's next change no longer reaches it
    api.post("/previews/stop", {"bucket": workspace.name}, format="json")
    assert runner.wait_until(lambda: slot not in egress_services._attached, timeout=30)
    assert api.put(f"/mounts/{workspace.name}/egress", {"allow": ["198.51.100.78"]},
                   format="json").status_code == 200
    assert not any("198.51.100.78" in rule for rule in chain(slot))
    api.delete(f"/mounts/{workspace.name}/egress")
