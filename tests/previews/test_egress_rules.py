"""The egress policy's pure parts: entry checks and the rules of a sandbox's chain, in order.

The rules are proven from inside real sandboxes in tests/security/test_egress.py; these pin
down the order that makes them right (first match wins).
"""

from __future__ import annotations

import ipaddress

import pytest

from egress import policy
from egress.policy import Host, Policy, PolicyError, chain_rules
from sandbox import network as sandbox_network

HOST = Host(addresses=[ipaddress.ip_network("192.0.2.2/32"), ipaddress.ip_network("fd00::2/128")],
            networks=[ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("fd00::/64"),
                      ipaddress.ip_network("10.20.0.0/16")],
            resolvers=["10.255.255.53", "127.0.0.53"])
REJECT = "-j REJECT --reject-with icmp-admin-prohibited"


def position(rules: list[str], prefix: str) -> int:
    return next(i for i, rule in enumerate(rules) if rule.startswith(prefix))


def test_internet_refuses_the_protected_ranges_then_accepts() -> None:
    rules = chain_rules(Policy(), version=4, host=HOST)

    for network in ("127.0.0.0/8", "10.64.0.0/10", "192.0.2.2/32", "10.0.0.0/8", "172.16.0.0/12",
                    "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "224.0.0.0/4",
                    "192.0.2.0/24"):
        assert f"-d {network} {REJECT}" in rules
    assert rules[-1] == "-j ACCEPT"
    # A host network inside a protected range adds nothing; the host's loopback resolver is not
    # the sandbox's.
    assert not any("10.20.0.0/16" in rule or "127.0.0.53" in rule for rule in rules)


def test_an_allow_entry_inside_a_protected_range_opens_it_and_a_broad_one_does_not() -> None:
    rules = chain_rules(Policy(mode="allowlist", allow=["169.254.169.254/32", "0.0.0.0/0"]),
                        version=4, host=HOST)

    explicit = position(rules, "-d 169.254.169.254/32 -j ACCEPT")
    broad = position(rules, "-d 0.0.0.0/0 -j ACCEPT")
    link_local = position(rules, "-d 169.254.0.0/16")
    host = position(rules, "-d 192.0.2.2/32")
    assert host < explicit < link_local < broad
    assert rules[-1] == REJECT


def test_deny_wins_and_resolvers_get_port_53_only() -> None:
    rules = chain_rules(Policy(allow=["10.1.2.3"], deny=["10.1.2.3", "example.org"],
                               pinned={"example.org": ["93.184.215.14", "2606:2800:21f::1"]}),
                        version=4, host=HOST,
                        operator_deny=[ipaddress.ip_network("203.0.113.0/24")])

    assert position(rules, "-d 203.0.113.0/24 -j REJECT") < position(rules, "-d 10.1.2.3/32 -j REJ")
    assert position(rules, "-d 10.1.2.3/32 -j REJECT") < position(rules, "-d 10.1.2.3/32 -j ACC")
    assert f"-d 93.184.215.14/32 {REJECT}" in rules
    assert not any("2606" in rule for rule in rules)
    dns = position(rules, "-d 10.255.255.53 -p udp --dport 53 -j ACCEPT")
    assert dns < position(rules, "-d 10.0.0.0/8")


def test_none_rejects_everything_and_ipv6_has_its_own_ranges() -> None:
    assert chain_rules(Policy(mode="none"), version=4, host=HOST) == [REJECT]
    six = chain_rules(Policy(), version=6, host=HOST)
    reject6 = "-j REJECT --reject-with icmp6-adm-prohibited"
    for network in ("::1/128", "fd00::2/128", "fc00::/7", "fe80::/10", "ff00::/8",
                    "::ffff:0:0/96"):
        assert f"-d {network} {reject6}" in six
    assert not any("." in rule.split()[1] for rule in six if rule.startswith("-d "))


@pytest.mark.parametrize(("entries", "code"), [
    ("10.0.0.0/8", "invalid_egress"),
    (["10.0.0.1/8"], "invalid_cidr"),
    (["1.2.3.4.5"], "invalid_cidr"),
    (["fe80::/200"], "invalid_cidr"),
    (["a..b"], "invalid_host"),
    (["under_score.example"], "invalid_host"),
    ([""], "invalid_egress"),
    ([7], "invalid_egress"),
    (["10.0.0.0/8"] * 101, "too_many_entries"),
])
def test_bad_entries_name_their_mistake(entries: object, code: str) -> None:
    with pytest.raises(PolicyError) as raised:
        policy.check_entries(entries, field_name="allow")

    assert raised.value.code == code


def test_good_entries_are_kept_normalised() -> None:
    assert policy.check_entries(["10.0.0.0/8", "2001:DB8::/32", "API.Example.com", "db"],
                                field_name="allow") == ["10.0.0.0/8", "2001:db8::/32",
                                                        "api.example.com", "db"]


def test_allow_entries_never_reach_loopback_sandboxes_or_the_host() -> None:
    host = [ipaddress.ip_network("192.0.2.2/32")]
    for entry in ("127.0.0.1", "10.64.3.2/32", "10.70.0.0/16", "192.0.2.2", "::1"):
        with pytest.raises(PolicyError):
            policy.check_allowed(policy.networks_of([entry], {}), host=host)
    policy.check_allowed(policy.networks_of(["0.0.0.0/0", "10.0.0.0/8", "::/0"], {}), host=host)


def test_a_netns_link_has_no_ipv6(settings) -> None:  # type: ignore[no-untyped-def]
    settings.INSTANCE_ID = "abc123"
    host, inner = sandbox_network.netns_create_batches(sandbox_network.netns_for(3))

    # addrgenmode before the link comes up: no link-local address is ever made
    assert host.index("addrgenmode none") < host.index("link set wabc123h3 up")
    assert inner.index("addrgenmode none") < inner.index("link set wabc123c3 up")


def test_every_sandbox_packet_beyond_the_host_goes_through_the_egress_chain(settings) -> None:  # type: ignore[no-untyped-def]
    settings.INSTANCE_ID = "abc123"
    for version in (4, 6):
        rules = sandbox_network.firewall_rules(version=version)
        assert ["-I", "FORWARD", "-i", "wabc123+", "-j", "WELDR-abc123-OUT"] in rules
        assert ["-I", "INPUT", "-i", "wabc123+", "-j", "WELDR-abc123"] in rules
    # A veth without a slot chain yet reaches nothing.
    assert sandbox_network.egress_base_restore(version=4).splitlines()[1:3] == [
        ":WELDR-abc123-OUT - [0:0]",
        "-A WELDR-abc123-OUT -j REJECT --reject-with icmp-admin-prohibited"]
