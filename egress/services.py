"""Egress policies: set, read, resolve, and apply to the sandboxes that run (docs/security.md).

A policy is applied per sandbox, on the host: its veth's packets that leave the host go through
the chain of its netns slot (sandbox/network.py makes one per slot, rejecting everything until
a bucket's policy fills it). `sandbox_attach` fills it when a sandbox of a bucket starts (exec,
cold and warm previews), `sandbox_detach` empties it when the netns is released, and a changed
policy is applied at once to every running sandbox of its bucket.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from egress import policy as rules
from egress.errors import InvalidEgress
from egress.models import EgressPolicy
from weldr_agent import runner

logger = logging.getLogger("weldr.egress")

RESOLVE_TIMEOUT_SECONDS = 5.0
RESOLV_CONF = Path("/etc/resolv.conf")
# Absent when the kernel runs without IPv6 (ipv6.disable=1): ip6tables cannot work there.
IPV6_PRESENT = Path("/proc/net/if_inet6")

_lock = threading.RLock()
# netns slot -> bucket, for the sandboxes that run now.
_attached: dict[int, str] = {}
# netns slot -> host veth, for the slots whose chain (and the jump to it) exists. Made on first
# use: 256 chains made at start-up cost ~1.7 s per IP version with iptables-nft.
_chains: dict[int, str] = {}
# netns slot -> the policy its chains hold now (None: reject everything).
_applied: dict[int, rules.Policy | None] = {}
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="egress-resolve")
_restorer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="egress-restore")


# ---------------------------------------------------------------------------------------------
# The policy of a bucket
# ---------------------------------------------------------------------------------------------

def default_policy() -> rules.Policy:
    return rules.Policy(mode=settings.SANDBOX_EGRESS_MODE, allow=settings.SANDBOX_EGRESS_ALLOW)


def policy_for(*, bucket: str) -> rules.Policy:
    row = EgressPolicy.objects.filter(bucket=bucket).first()
    if row is None:
        return default_policy()
    return rules.Policy(mode=row.mode, allow=row.allow, deny=row.deny, pinned=row.pinned)


def egress_policy_get(*, bucket: str) -> dict[str, object]:
    """The bucket's policy as the API shows it; `source` says whether it is the default."""
    row = EgressPolicy.objects.filter(bucket=bucket).first()
    if row is None:
        default = default_policy()
        return {"bucket": bucket, "source": "default", "mode": default.mode,
                "allow": list(default.allow), "deny": [], "pinned": {},
                "operator_deny": settings.SANDBOX_EGRESS_DENY, "updated_at": None}
    return {"bucket": bucket, "source": "bucket", "mode": row.mode, "allow": row.allow,
            "deny": row.deny, "pinned": row.pinned,
            "operator_deny": settings.SANDBOX_EGRESS_DENY, "updated_at": row.updated_at}


def egress_policy_set(*, bucket: str, mode: str, allow: object, deny: object) -> dict[str, object]:
    """Check, resolve host names (pinned), store, and apply to the bucket's running sandboxes."""
    if mode not in rules.MODES:
        raise InvalidEgress(f"`mode` must be one of {', '.join(rules.MODES)}.")
    try:
        allow_list = rules.check_entries(allow, field_name="allow")
        deny_list = rules.check_entries(deny, field_name="deny")
        pinned = resolve_all([name for name in dict.fromkeys((*allow_list, *deny_list))
                              if rules.parse_network(name) is None])
        rules.check_allowed(rules.networks_of(allow_list, pinned), host=host_facts().addresses)
    except rules.PolicyError as error:
        raise InvalidEgress(str(error), code=error.code) from None
    with transaction.atomic(using="default"):
        EgressPolicy.objects.update_or_create(bucket=bucket, defaults={
            "mode": mode, "allow": allow_list, "deny": deny_list, "pinned": pinned})
    bucket_reapply(bucket=bucket)
    return egress_policy_get(bucket=bucket)


def egress_policy_delete(*, bucket: str) -> dict[str, object]:
    """Back to the default policy (applied at once to running sandboxes)."""
    EgressPolicy.objects.filter(bucket=bucket).delete()
    bucket_reapply(bucket=bucket)
    return egress_policy_get(bucket=bucket)


def resolve_all(names: list[str]) -> dict[str, list[str]]:
    """Each host name's addresses now, side by side, all within RESOLVE_TIMEOUT_SECONDS."""
    if len(names) > rules.MAX_HOST_NAMES:
        raise rules.PolicyError(f"{len(names)} host names; at most {rules.MAX_HOST_NAMES} "
                                "(CIDRs are not limited so).", code="too_many_entries")
    deadline = time.monotonic() + RESOLVE_TIMEOUT_SECONDS
    futures = {name: _resolver.submit(socket.getaddrinfo, name, None, proto=socket.IPPROTO_TCP)
               for name in names}
    return {name: resolve(name, future, deadline=deadline) for name, future in futures.items()}


def resolve(name: str, future: Future[list[Any]], *, deadline: float) -> list[str]:
    """The addresses `name` resolved to (at most 16, sorted); PolicyError when none.

    Bounded in time: getaddrinfo has no timeout of its own, so it runs in a worker.
    """
    try:
        infos = future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        raise rules.PolicyError(f"{name!r} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g}s.",
                                code="unresolvable_host") from None
    except OSError as error:
        raise rules.PolicyError(f"{name!r} does not resolve: {error.strerror or error}.",
                                code="unresolvable_host") from None
    addresses = sorted({str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos})
    if not addresses:
        raise rules.PolicyError(f"{name!r} does not resolve.", code="unresolvable_host")
    return addresses[:rules.MAX_ADDRESSES_PER_NAME]


def host_facts() -> rules.Host:
    """The host's addresses and link networks on every interface, and the sandboxes' resolvers."""
    listed = runner.run([runner.tool("ip"), "-j", "address", "show"], timeout=30).stdout
    addresses: list[rules.Network] = []
    networks: list[rules.Network] = []
    for link in json.loads(listed or "[]"):
        for info in link.get("addr_info", []):
            interface = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            addresses.append(ipaddress.ip_network(interface.ip))
            # A /0 or the loopback's /8 is not a neighbourhood.
            if 0 < interface.network.prefixlen < interface.max_prefixlen and \
                    not interface.ip.is_loopback:
                networks.append(interface.network)
    try:
        resolvers = rules.parse_resolv_conf(RESOLV_CONF.read_text())
    except OSError:
        resolvers = []
    return rules.Host(addresses=addresses, networks=networks, resolvers=resolvers)


# ---------------------------------------------------------------------------------------------
# Applying it to sandboxes
# ---------------------------------------------------------------------------------------------

def slot_restore(*, slot: int, policy: rules.Policy | None, version: int,
                 host: rules.Host, interface: str | None = None) -> str:
    """iptables-restore input for the chain of `slot` (None: reject everything).

    With `interface`, the chain is new: the dispatch chain's jump to it is added too.
    """
    instance = settings.INSTANCE_ID
    chain = rules.slot_chain(instance, slot)
    operator_deny = [ipaddress.ip_network(n) for n in settings.SANDBOX_EGRESS_DENY]
    body = rules.chain_rules(policy or rules.Policy(mode="none"), version=version, host=host,
                             operator_deny=operator_deny)
    jump = ([f"-I {rules.out_chain(instance)} -i {interface} -j {chain}"]
            if interface is not None else [])
    return rules.restore_input({chain: body}, extra=jump)


def _restore(*, slot: int, policy: rules.Policy | None, interface: str) -> None:
    """Both IP versions' chains of `slot`, side by side (a sandbox's start waits for them)."""
    host = host_facts() if policy is not None and policy.mode != "none" else rules.Host()
    new = _chains.get(slot) != interface
    runs = [_restorer.submit(
        runner.run, [runner.tool(binary), "-w", "10", "--noflush"], timeout=30,
        input=slot_restore(slot=slot, policy=policy, version=version, host=host,
                           interface=interface if new else None))
        for version, binary in families(suffix="-restore")]
    try:
        for run in runs:
            run.result()
    except BaseException:
        # Whatever the chains hold now, it is not known: the next use applies them again.
        _applied.pop(slot, None)
        raise
    _chains[slot] = interface
    _applied[slot] = policy


def families(*, suffix: str = "") -> list[tuple[int, str]]:
    """(IP version, iptables binary) pairs; no IPv6 ones on a kernel booted without IPv6."""
    versions = [(4, f"iptables{suffix}")]
    if IPV6_PRESENT.exists():
        versions.append((6, f"ip6tables{suffix}"))
    return versions


def chains_forget() -> None:
    """The firewall was (re)made without any slot chain (sandbox/network.py: firewall_up)."""
    with _lock:
        _chains.clear()
        _attached.clear()
        _applied.clear()


def sandbox_prepare(*, slot: int, interface: str) -> None:
    """A new netns of `slot` gets the default policy, ahead of any bucket (off the critical path).

    Nothing runs in it until a sandbox of a bucket starts (a warm container's init is runc's,
    blocked on its exec fifo); `sandbox_attach` then has nothing to do for the many buckets
    without a policy of their own. Each iptables-restore costs 10-30 ms here, which a warm
    preview's ~1 ms start would otherwise pay.
    """
    with _lock:
        _attached.pop(slot, None)
        _restore(slot=slot, policy=default_policy(), interface=interface)


def sandbox_attach(*, slot: int, interface: str, bucket: str) -> None:
    """Apply `bucket`'s policy to the sandbox on netns `slot` (before its process starts)."""
    with _lock:
        policy = policy_for(bucket=bucket)
        if slot not in _applied or _applied[slot] != policy or _chains.get(slot) != interface:
            _restore(slot=slot, policy=policy, interface=interface)
        _attached[slot] = bucket


def sandbox_detach(*, slot: int, interface: str) -> None:
    """The netns of `slot` leaves its bucket: its chain rejects everything again."""
    with _lock:
        _attached.pop(slot, None)
        _restore(slot=slot, policy=None, interface=interface)


def bucket_reapply(*, bucket: str) -> None:
    """Apply `bucket`'s current policy to each of its running sandboxes."""
    with _lock:
        slots = [slot for slot, name in _attached.items() if name == bucket]
        policy = policy_for(bucket=bucket)
        for slot in slots:
            _restore(slot=slot, policy=policy, interface=_chains[slot])
