"""Network namespaces with a veth link, pooled, and the firewall that fences them in.

Every sandbox (a preview, a warm one, a bucket's command sandbox) runs in one of these: a
private netns with a veth link (IPv4 only), taken from a pool made off the critical path
(sandbox/pool.py, which the warm containers' pool shares). An
iptables chain per instance drops everything a sandbox sends to the host but replies, and a
chain per netns slot applies its bucket's egress policy to the rest: the chains and the
policies are the egress app's (egress/services.py, egress/policy.py); this module places the
fence and hands each slot to it (docs/sandbox.md).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from egress import policy as egress_policy
from egress import services as egress
from sandbox.pool import MadeAheadPool
from weldr_agent import runner

logger = logging.getLogger("weldr.sandbox")

# A /22 per agent instance inside 10.64.0.0/10: 256 /30 links, chosen by the instance id so two
# agents (or two test runs) on one machine do not collide.
LINK_BLOCKS = ipaddress.ip_network("10.64.0.0/10")
LINKS_PER_INSTANCE = 256
POOL_SIZE = 2
FENCE_WAIT_SECONDS = 120
# At shutdown, how long to wait for the namespace the filler is making (`ip`: well under this),
# and for the namespaces given back just before it (their chain emptied, then deleted).
FILLER_JOIN_SECONDS = 30
RECYCLE_JOIN_SECONDS = 30


class NetnsExhausted(runner.CommandError):
    """Every network namespace slot of this instance is in use."""

# ---------------------------------------------------------------------------------------------
# Network namespaces with a veth link, pooled
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Netns:
    """A network namespace `name` linked to the host by veth `host_if` <-> `inner_if`."""

    slot: int
    name: str
    host_if: str
    inner_if: str
    host_ip: str
    ip: str

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name


def _instance_block() -> ipaddress.IPv4Network:
    # Computed, not picked from a list of the 4,096 /22s: that list was a third of the agent's
    # CPU in a burst of twenty starts (one per netns made).
    blocks = 2 ** (22 - LINK_BLOCKS.prefixlen)
    index = int(hashlib.sha256(settings.INSTANCE_ID.encode()).hexdigest(), 16) % blocks
    return ipaddress.ip_network((int(LINK_BLOCKS.network_address) + index * 2 ** 10, 22))


def netns_for(slot: int) -> Netns:
    """Names and addresses of link `slot` (pure); names fit IFNAMSIZ (15)."""
    base = _instance_block().network_address + 4 * slot
    prefix = f"w{settings.INSTANCE_ID}"
    return Netns(slot=slot, name=f"weldr-{settings.INSTANCE_ID}-{slot}",
                 host_if=f"{prefix}h{slot}", inner_if=f"{prefix}c{slot}",
                 host_ip=str(base + 1), ip=str(base + 2))


def netns_create_batches(ns: Netns) -> tuple[str, str]:
    """`ip -batch` input for the host side and for the namespace side (pure).

    No IPv6 on the link: `addrgenmode none` before the links come up, so neither end gets a
    link-local address (the sandbox could otherwise reach the host's ports at fe80::…%veth,
    which no IPv4 rule sees); the sandbox has no CAP_NET_ADMIN to add one.
    """
    host = (f"netns add {ns.name}\n"
            f"link add {ns.host_if} type veth peer name {ns.inner_if} netns {ns.name}\n"
            f"link set {ns.host_if} addrgenmode none\n"
            f"addr add {ns.host_ip}/30 dev {ns.host_if}\n"
            f"link set {ns.host_if} up\n")
    inner = (f"link set {ns.inner_if} addrgenmode none\n"
             f"addr add {ns.ip}/30 dev {ns.inner_if}\n"
             f"link set {ns.inner_if} up\n"
             "link set lo up\n"
             f"route add default via {ns.host_ip}\n")
    return host, inner


def firewall_chain() -> str:
    return f"WELDR-{settings.INSTANCE_ID}"


def firewall_rules(*, version: int = 4) -> list[list[str]]:
    """iptables (or ip6tables) argv, without the binary, that fence this instance's sandboxes.

    A sandbox may answer connections the host opened to it (the preview proxy) and nothing
    else of the host: not the agent's API, not any host port on any of its addresses. What it
    sends beyond the host goes through the chain of its netns slot (`egress_base_restore`),
    which applies its bucket's egress policy (egress/policy.py). Both IP versions, although
    sandboxes get no IPv6 (`netns_create_batches`): a future IPv6 link is fenced already.
    """
    chain, ifs = firewall_chain(), f"w{settings.INSTANCE_ID}+"
    rules = [
        ["-N", chain],
        ["-A", chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-A", chain, "-j", "DROP"],
        ["-I", "INPUT", "-i", ifs, "-j", chain],
        ["-I", "FORWARD", "-i", ifs, "-j", egress_policy.out_chain(settings.INSTANCE_ID)],
        ["-I", "FORWARD", "-i", ifs, "-o", "w+", "-j", "DROP"],
    ]
    if settings.SANDBOX_OUTBOUND and version == 4:
        block = str(_instance_block())
        rules += [["-t", "nat", "-A", "POSTROUTING", "-s", block, "!", "-o", "w+",
                   "-j", "MASQUERADE"]]
    return rules


def firewall_teardown_rules(*, version: int = 4) -> list[list[str]]:
    chain, ifs = firewall_chain(), f"w{settings.INSTANCE_ID}+"
    rules = [["-D", "INPUT", "-i", ifs, "-j", chain],
             ["-D", "FORWARD", "-i", ifs, "-o", "w+", "-j", "DROP"],
             ["-D", "FORWARD", "-i", ifs, "-j", egress_policy.out_chain(settings.INSTANCE_ID)],
             ["-F", chain], ["-X", chain]]
    if settings.SANDBOX_OUTBOUND and version == 4:
        rules.append(["-t", "nat", "-D", "POSTROUTING", "-s", str(_instance_block()),
                      "!", "-o", "w+", "-j", "MASQUERADE"])
    return rules


def egress_base_restore(*, version: int) -> str:
    """iptables-restore input: the chain that dispatches a sandbox's packets by veth (pure).

    A veth with no slot chain yet is rejected; a slot's chain is made with its netns, holding
    the default policy, and given its bucket's when a sandbox starts there (egress/services.py);
    a start whose policy cannot be applied fails, and a released slot rejects everything.
    """
    reject = ("REJECT --reject-with icmp-admin-prohibited" if version == 4
              else "REJECT --reject-with icmp6-adm-prohibited")
    return egress_policy.restore_input({egress_policy.out_chain(settings.INSTANCE_ID):
                                        [f"-j {reject}"]})


def egress_teardown_restore(listed: str) -> str:
    """iptables-restore input removing this instance's egress chains found in `iptables -S`."""
    prefix = f"{egress_policy.out_chain(settings.INSTANCE_ID)[:-3]}"
    names = [line.split()[1] for line in listed.splitlines()
             if line.startswith("-N ") and line.split()[1].startswith(prefix)
             and line.split()[1] != firewall_chain()]
    if not names:
        return ""
    return "*filter\n" + "".join(f"-F {n}\n" for n in names) + \
        "".join(f"-X {n}\n" for n in names) + "COMMIT\n"


def _iptables(rules: list[list[str]], *, check: bool, binary: str = "iptables") -> None:
    path = runner.tool(binary)
    for rule in rules:
        runner.run([path, "-w", "10", *rule], timeout=30, check=check)


def _egress_teardown(binary: str) -> None:
    listed = runner.run([runner.tool(binary), "-w", "10", "-S"], timeout=30, check=False).stdout
    text = egress_teardown_restore(listed)
    if text:
        runner.run([runner.tool(f"{binary}-restore"), "-w", "10", "--noflush"], input=text,
                   timeout=60, check=False)


def firewall_up() -> None:
    """(Re)install this instance's fence and its egress chains, IPv4 and IPv6; idempotent."""
    firewall_down()
    egress.chains_forget()
    for version, binary in egress.families():
        runner.run([runner.tool(f"{binary}-restore"), "-w", "10", "--noflush"], timeout=60,
                   input=egress_base_restore(version=version))
        _iptables(firewall_rules(version=version), check=True, binary=binary)
    if settings.SANDBOX_OUTBOUND:
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def firewall_down() -> None:
    for version, binary in egress.families():
        _iptables(firewall_teardown_rules(version=version), check=False, binary=binary)
        _egress_teardown(binary)


def _netns_create(ns: Netns) -> None:
    ip = runner.tool("ip")
    # A slot's chain may still hold the policy of its previous bucket: the default's now.
    egress.sandbox_prepare(slot=ns.slot, interface=ns.host_if)
    host, inner = netns_create_batches(ns)
    try:
        runner.run([ip, "-batch", "-"], input=host, timeout=30)
    except runner.CommandError:
        # Left over (a delete that failed, or a veth the kernel still frees): delete, retry.
        # Deleting first every time was two more `ip` runs per namespace, on the critical
        # path of a start that finds the pool empty.
        _netns_delete(ns)
        runner.run([ip, "-batch", "-"], input=host, timeout=30)
    runner.run([ip, "-n", ns.name, "-batch", "-"], input=inner, timeout=30)


def _netns_delete(ns: Netns) -> None:
    ip = runner.tool("ip")
    # The host end first and explicitly: namespace deletion frees it asynchronously
    # (docs/sandbox.md).
    runner.run([ip, "link", "del", ns.host_if], timeout=30, check=False)
    runner.run([ip, "netns", "del", ns.name], timeout=30, check=False)


class NetnsPool(MadeAheadPool[Netns]):
    """Namespaces made ahead of time by a filler thread (sandbox/pool.py); a start that finds
    none ready makes one itself. A given-back one is deleted and its slot made afresh."""

    thread_name = "netns-pool"
    what = "a network namespace"
    retry_seconds = 1.0

    def __init__(self, size: int = POOL_SIZE) -> None:
        super().__init__()
        self._size = size
        self._used: set[int] = set()
        self._started = False
        self._fenced = threading.Event()
        self._recycling: set[threading.Thread] = set()

    @property
    def size(self) -> int:
        return self._size

    def _free_slot(self) -> int:
        with self._lock:
            for slot in range(LINKS_PER_INSTANCE):
                if slot not in self._used:
                    self._used.add(slot)
                    return slot
        raise NetnsExhausted([], "No free network namespace slot left for sandboxes.")

    def start(self) -> None:
        """Clear what a previous agent left, fence the instance, start filling the pool."""
        with self._lock:
            first, self._started = not self._started, True
        if not first:
            # A netns made before the fence is up would get its egress chain torn down with
            # the previous agent's (or fail to jump to a dispatch chain not made yet).
            self._fenced.wait(FENCE_WAIT_SECONDS)
            return
        try:
            self.reset()
            firewall_up()
        finally:
            self._fenced.set()
        self._filler_start()

    def reset(self, *, everything: bool = False) -> None:
        """Delete this instance's namespaces not in use (all of them with `everything`)."""
        listed = runner.run([runner.tool("ip"), "netns", "list"], timeout=30).stdout
        prefix = f"weldr-{settings.INSTANCE_ID}-"
        for line in listed.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                slot = int(name[len(prefix):])
                with self._lock:
                    if slot in self._used and not everything:
                        continue
                _netns_delete(netns_for(slot))

    def _make(self) -> Netns:
        """A namespace on a free slot, made now (by the filler, or by a start that found none)."""
        ns = netns_for(self._free_slot())
        try:
            _netns_create(ns)
        except Exception:
            with self._lock:
                self._used.discard(ns.slot)
            raise
        return ns

    def _discard(self, ns: Netns) -> None:
        _netns_delete(ns)
        with self._lock:
            self._used.discard(ns.slot)

    def acquire(self, *, bucket: str | None = None) -> Netns:
        """A ready namespace: from the pool when there is one, else made now.

        With `bucket`, its egress policy is applied (`assign`); without, it holds the default
        policy until it is assigned (a warm sandbox's, whose process has not started).
        """
        self.start()
        ns = self._pop() or self._make()
        if bucket is not None:
            try:
                self.assign(ns, bucket=bucket)
            except Exception:
                self.release(ns)
                raise
        return ns

    def assign(self, ns: Netns, *, bucket: str) -> None:
        """Give `ns` the egress policy of `bucket` (before the sandbox's process starts)."""
        egress.sandbox_attach(slot=ns.slot, interface=ns.host_if, bucket=bucket)

    def release(self, ns: Netns) -> None:
        """Give a namespace back; it is deleted and made afresh off the critical path."""
        def recycle() -> None:
            try:
                # After shutdown the chains are gone; emptying one would make it anew.
                if not self._closed:
                    egress.sandbox_detach(slot=ns.slot, interface=ns.host_if)
            except runner.CommandError:
                logger.exception("could not empty the egress chain of slot %s", ns.slot)
            _netns_delete(ns)
            with self._lock:
                self._used.discard(ns.slot)
                self._recycling.discard(threading.current_thread())
                self._lock.notify_all()
        thread = threading.Thread(target=recycle, name=f"netns-del-{ns.slot}", daemon=True)
        with self._lock:
            self._recycling.add(thread)
        thread.start()

    def shutdown(self) -> None:
        for ns in self._close(join=FILLER_JOIN_SECONDS):
            self._discard(ns)
        # A namespace given back just before: its chain emptied after `firewall_down` would be
        # made anew (iptables-restore declares it) and outlive the agent, so they end first.
        with self._lock:
            recycling = list(self._recycling)
        for thread in recycling:
            thread.join(RECYCLE_JOIN_SECONDS)
        # Namespaces still being recycled by daemon threads would outlive the process.
        self.reset(everything=True)
        firewall_down()


netns_pool = NetnsPool()
