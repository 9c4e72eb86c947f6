"""What a sandbox may reach: the ranges, the checks on a policy, the firewall rules (pure).

A policy has a mode, `internet` (everything but the protected ranges), `allowlist` (only what
it names) or `none` (nothing), an allow-list and a deny-list. Evaluated per packet a sandbox
sends beyond the host, first match wins (docs/security.md, "Network"):

1. never: loopback, every agent's sandbox links, the host's own addresses — no entry opens them
   (the host is also fenced on INPUT, whatever the policy);
2. the deny-list (the operator's SANDBOX_EGRESS_DENY, then the bucket's);
3. the resolvers of the sandbox's /etc/resolv.conf (the host's), port 53 only: often a private
   address (10.x in a VPC, fdaa::3 on Fly);
4. allow entries that lie inside a protected range: naming a part of one opens that part;
5. the protected ranges (link-local and cloud metadata, RFC 1918, CGNAT, ULA, multicast,
   reserved, the networks of the host's links);
6. the other allow entries (a broad one such as 0.0.0.0/0 never re-opens a protected range);
7. `internet`: accept; otherwise reject. `none` rejects everything, from the first rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("internet", "allowlist", "none")
MAX_ENTRIES = 100
# Each is resolved when the policy is set (side by side, within a few seconds).
MAX_HOST_NAMES = 20
MAX_ADDRESSES_PER_NAME = 16

# Never reachable from a sandbox, whatever a policy says.
NEVER = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",
    # Every agent's sandbox links (sandbox/network.py: LINK_BLOCKS): other sandboxes.
    "10.64.0.0/10",
))

# Refused unless an allow entry names (a part of) one of them.
PROTECTED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",          # "this network"
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",   # RFC 1918
    "100.64.0.0/10",      # CGNAT (carrier and cloud internal services)
    "169.254.0.0/16",     # link-local, 169.254.169.254: cloud metadata and its credentials
    "192.0.0.0/24",       # IETF protocol assignments
    "198.18.0.0/15",      # benchmarking; some networks use it internally
    "224.0.0.0/4",        # multicast
    "240.0.0.0/4",        # reserved, broadcast
    "::/128", "::ffff:0:0/96",  # unspecified, IPv4-mapped (would reach any IPv4 address)
    "64:ff9b:1::/48",     # NAT64 for local use
    "100::/64",           # discard
    "2001::/32",          # Teredo (embeds IPv4 addresses)
    "2002::/16",          # 6to4 (embeds IPv4 addresses)
    "fc00::/7",           # ULA (Fly's 6PN is fdaa::/16)
    "fe80::/10", "fec0::/10",  # link-local, old site-local
    "ff00::/8",           # multicast
))

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class PolicyError(ValueError):
    """A policy's field is wrong; `code` names the mistake for the API."""

    def __init__(self, message: str, *, code: str = "invalid_egress") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Policy:
    """A bucket's policy with its host names resolved (`pinned`: name -> addresses)."""

    mode: str = "internet"
    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    pinned: dict[str, list[str]] = field(default_factory=dict)


def parse_network(entry: str) -> Network | None:
    """`entry` as a network (an address is its /32 or /128); None when it is no address."""
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as error:
        if "/" in entry or ":" in entry or entry.replace(".", "").isdigit():
            raise PolicyError(f"{entry!r} is not a valid CIDR: {error}.",
                              code="invalid_cidr") from None
        return None


def is_host_name(entry: str) -> bool:
    """A DNS name (RFC 1123 labels; one label is a local name, e.g. a service's); not numeric."""
    name = entry.rstrip(".").lower()
    labels = name.split(".")
    return (0 < len(name) <= 253 and not labels[-1].isdigit()
            and all(_LABEL.fullmatch(label) for label in labels))


def check_entries(entries: object, *, field_name: str) -> list[str]:
    """The list as given (CIDRs, addresses, host names), or PolicyError naming the bad one."""
    if not isinstance(entries, list):
        raise PolicyError(f"`{field_name}` must be a list of CIDRs or host names.")
    if len(entries) > MAX_ENTRIES:
        raise PolicyError(f"`{field_name}` holds {len(entries)} entries; at most {MAX_ENTRIES}.",
                          code="too_many_entries")
    checked = []
    for entry in entries:
        if not isinstance(entry, str) or not entry or len(entry) > 253:
            raise PolicyError(f"`{field_name}`: {entry!r} is not a CIDR or a host name.")
        entry = entry.strip().lower()
        if parse_network(entry) is None and not is_host_name(entry):
            raise PolicyError(f"`{field_name}`: {entry!r} is neither a CIDR nor a host name.",
                              code="invalid_host")
        checked.append(entry)
    return checked


def check_allowed(networks: Iterable[tuple[str, Network]], *, host: Sequence[Network]) -> None:
    """Allow entries may not name what is never reachable (loopback, sandboxes, the host).

    A broader entry (0.0.0.0/0) is fine: those ranges are refused before any allow entry.
    """
    for entry, network in networks:
        for never in (*NEVER, *host):
            if network.version == never.version and network.subnet_of(never):  # type: ignore[arg-type]
                raise PolicyError(
                    f"`allow`: {entry!r} ({network}) reaches {never}, which a sandbox may never "
                    "reach (loopback, sandbox links, the host's own addresses).",
                    code="egress_forbidden")


def networks_of(entries: Sequence[str], pinned: dict[str, list[str]]) -> list[tuple[str, Network]]:
    """Each entry's networks: a CIDR itself, a host name its pinned addresses."""
    result: list[tuple[str, Network]] = []
    for entry in entries:
        network = parse_network(entry)
        if network is not None:
            result.append((entry, network))
        else:
            result += [(entry, ipaddress.ip_network(a)) for a in pinned.get(entry, [])]
    return result


def _inside(network: Network, ranges: Iterable[Network]) -> bool:
    return any(network.version == r.version and network.subnet_of(r)  # type: ignore[arg-type]
               for r in ranges)


def _unique(networks: Iterable[Network]) -> list[Network]:
    return list(dict.fromkeys(networks))


@dataclass(frozen=True)
class Host:
    """What the rules need to know about the machine (read at apply time)."""

    addresses: Sequence[Network] = ()   # every address of every interface, as /32 or /128
    networks: Sequence[Network] = ()    # the networks of its links (its neighbours)
    resolvers: Sequence[str] = ()       # nameservers of the sandboxes' /etc/resolv.conf


def chain_rules(policy: Policy, *, version: int, host: Host,
                operator_deny: Sequence[Network] = ()) -> list[str]:
    """The rules of one sandbox's chain for IP `version`, as iptables-restore `-A` tails."""
    reject = ("-j REJECT --reject-with icmp-admin-prohibited" if version == 4
              else "-j REJECT --reject-with icmp6-adm-prohibited")
    if policy.mode == "none":
        return [reject]

    def mine(networks: Iterable[Network]) -> list[Network]:
        return [n for n in networks if n.version == version]

    never = _unique(mine((*NEVER, *(a for a in host.addresses if not _inside(a, NEVER)))))
    protected = _unique(mine((*PROTECTED, *(n for n in host.networks
                                            if not _inside(n, (*NEVER, *PROTECTED))))))
    allow = [n for _, n in networks_of(policy.allow, policy.pinned) if n.version == version]
    deny = mine((*operator_deny, *(n for _, n in networks_of(policy.deny, policy.pinned))))
    explicit = [n for n in allow if _inside(n, protected)]
    rules = [f"-d {n} {reject}" for n in never]
    rules += [f"-d {n} {reject}" for n in deny]
    for resolver in host.resolvers:
        address = ipaddress.ip_address(resolver)
        if address.version == version and not address.is_loopback:
            rules += [f"-d {address} -p {proto} --dport 53 -j ACCEPT" for proto in ("udp", "tcp")]
    rules += [f"-d {n} -j ACCEPT" for n in explicit]
    rules += [f"-d {n} {reject}" for n in protected]
    rules += [f"-d {n} -j ACCEPT" for n in allow if n not in explicit]
    rules.append("-j ACCEPT" if policy.mode == "internet" else reject)
    return rules


def restore_input(chains: dict[str, list[str]], *, extra: Sequence[str] = ()) -> str:
    """iptables-restore --noflush input that replaces each chain's rules at once (atomic).

    `extra`: whole rule lines after them (e.g. the jump into a chain just made).
    """
    lines = ["*filter"]
    lines += [f":{name} - [0:0]" for name in chains]
    for name, rules in chains.items():
        lines += [f"-A {name} {rule}" for rule in rules]
    lines += extra
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> list[str]:
    """The nameserver addresses of a resolv.conf (invalid lines ignored)."""
    servers = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                servers.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return servers


def slot_chain(instance: str, slot: int) -> str:
    """The chain of one netns slot's outgoing packets (≤ 28 characters)."""
    return f"WELDR-{instance}-S{slot}"


def out_chain(instance: str) -> str:
    """The chain FORWARD sends a sandbox's packets to; it dispatches by veth to the slots'."""
    return f"WELDR-{instance}-OUT"
