"""Egress from inside real sandboxes (an exec command, a preview app) to real listeners.

The listeners stand where a platform's secrets live: a network namespace "beyond the host"
(reached through the host, as a VPC's services, the cloud's metadata server or another
machine's CGNAT address would be) holding 10.213.7.2, 172.16.9.9, 192.168.213.7, 100.64.1.1,
169.254.169.254, 198.18.0.1, a ULA and 203.0.113.7 (a documentation address standing for "the
internet": the policy allows it, nothing here routes it anywhere else); and the host itself, on
its own addresses (10.213.8.2 and 198.51.100.1 on the test's link, every other address it has,
IPv6 included).

Nothing leaves this machine: the agent's sandboxes are routed by source (`ip rule from
<the agent's /22>`) into a table that holds the test addresses, a `throw` for the sandbox links
and a blackhole for everything else; forwarding is switched on for the test's and the agent's
interfaces only (never the machine-wide `ip_forward`, which other agents on it share). Every
namespace, link, address, rule and route is removed afterwards, whatever happens.
"""

# ruff: noqa: F811 - the exec tests' fixtures are imported by name and used as arguments
from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.test import override_settings

from tests.conftest import AgentProcess, agent_client, running_agent
from tests.exec.conftest import bucket, mount, unmount  # noqa: F401 (a fixture)
from weldr_agent import runner

pytestmark = pytest.mark.slow

PUBLIC = "203.0.113.7"
METADATA = "169.254.169.254"
PRIVATE = "10.213.7.2"
BEYOND_DENIED = [PRIVATE, "172.16.9.9", "192.168.213.7", "100.64.1.1", METADATA, "198.18.0.1",
                 "fd57:e9a1:5d2c::7"]
BEYOND = [PUBLIC, *BEYOND_DENIED]
HOST_EXTRA = "10.213.8.2"
# The host's side of the link to the namespace beyond (a documentation address).
GATEWAY = "198.51.100.1"

PROBE = r"""
import json, os, socket, sys
port, targets = int(sys.argv[1]), json.loads(sys.argv[2])
links = [n for _, n in socket.if_nameindex() if n != "lo"]
out = {}
for target in targets:
    host = f"{target}%{links[0]}" if target.startswith("fe80") and links else target
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.settimeout(3)
            s.connect(address)
            s.sendall(b"from-the-sandbox")
        out[target] = "ok"
    except OSError as error:
        out[target] = os.strerror(error.errno) if error.errno else str(error)
print(json.dumps(out))
"""

LISTENER = r"""
import select, socket, sys
port, log, addresses = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
servers = []
for address in addresses:
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(16)
    servers.append(s)
open(log + ".ready", "w").close()
while True:
    for s in select.select(servers, [], [])[0]:
        conn, _ = s.accept()
        with open(log, "a") as f:
            f.write(conn.getsockname()[0] + "\n")
        conn.close()
"""

PROBE_SERVER = r"""
import http.server, json, os, subprocess, sys, urllib.parse
class Probe(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        out = "up"
        if "t" in query:
            out = subprocess.run([sys.executable, "probe.py", query["port"][0], query["t"][0]],
                                 capture_output=True, text=True).stdout
        self.send_response(200)
        self.end_headers()
        self.wfile.write(out.encode())
address = (os.environ["HOST"], int(os.environ["PORT"]))
http.server.ThreadingHTTPServer(address, Probe).serve_forever()
"""


# ---------------------------------------------------------------------------------------------
# The agent and its bucket
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    # No NAT, no machine-wide ip_forward: the test routes and forwards for itself.
    yield from running_agent(tmp_path_factory.mktemp("agent"), SANDBOX_OUTBOUND="0")


@pytest.fixture(scope="module")
def http(agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(agent, timeout=60)


@pytest.fixture
def policy(http: httpx.Client, bucket: str) -> Iterator[None]:
    """Each test starts from the default policy and leaves it so."""
    http.delete(f"/mounts/{bucket}/egress")
    yield
    http.delete(f"/mounts/{bucket}/egress")


# ---------------------------------------------------------------------------------------------
# The network beyond the host, and the host's own listeners
# ---------------------------------------------------------------------------------------------

def ip(*args: str, check: bool = True) -> runner.Completed:
    return runner.run(["ip", *args], timeout=30, check=check)


def sysctl_forwarding(interface: str) -> None:
    Path(f"/proc/sys/net/ipv4/conf/{interface}/forwarding").write_text("1\n")


class Beyond:
    """A namespace beyond the host with listeners on BEYOND; the host's own listeners."""

    def __init__(self, instance: str, root: Path) -> None:
        tag = secrets.token_hex(3)
        self.instance = instance
        self.netns, self.host_if, self.inner_if = f"egr-{tag}", f"egr{tag}h", f"egr{tag}c"
        self.table = str(20000 + secrets.randbelow(10000))
        self.priority = str(1000 + secrets.randbelow(1000))
        self.port = 20000 + secrets.randbelow(20000)
        self.log = root / f"beyond-{tag}.log"
        with override_settings(INSTANCE_ID=instance):
            from sandbox.network import _instance_block

            self.block = str(_instance_block())
        self.undo: list[list[str]] = []
        self.process: runner.Popen[bytes] | None = None
        self.host_listeners: list[socket.socket] = []
        self.host_seen: list[str] = []
        self._stop = threading.Event()

    def up(self) -> None:
        self._step(["netns", "add", self.netns], ["netns", "del", self.netns])
        self._step(["link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if,
                    "netns", self.netns], ["link", "del", self.host_if])
        ip("addr", "add", f"{GATEWAY}/32", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        inner = ["ip", "-n", self.netns]
        for address in BEYOND:
            runner.run([*inner, "addr", "add", address + ("/128" if ":" in address else "/32"),
                        "dev", self.inner_if, *(["nodad"] if ":" in address else [])],
                       timeout=30)
        runner.run([*inner, "link", "set", self.inner_if, "up"], timeout=30)
        runner.run([*inner, "link", "set", "lo", "up"], timeout=30)
        runner.run([*inner, "route", "add", GATEWAY, "dev", self.inner_if], timeout=30)
        runner.run([*inner, "route", "add", "default", "via", GATEWAY], timeout=30)
        # Only the agent's sandboxes are routed there; the host's own traffic never is.
        self._step(["rule", "add", "from", self.block, "lookup", self.table, "priority",
                    self.priority],
                   ["rule", "del", "from", self.block, "lookup", self.table, "priority",
                    self.priority])
        self.undo.append(["route", "flush", "table", self.table])
        for address in BEYOND:
            if ":" not in address:
                ip("route", "add", f"{address}/32", "dev", self.host_if, "table", self.table)
        # Host -> sandbox (the preview proxy) goes on to the main table; the rest nowhere.
        ip("route", "add", "throw", "10.64.0.0/10", "table", self.table)
        ip("route", "add", "blackhole", "default", "table", self.table)
        # One more address of the host's own, a private one (this kernel has no dummy links).
        ip("addr", "add", f"{HOST_EXTRA}/32", "dev", self.host_if)
        sysctl_forwarding(self.host_if)
        self._listen_beyond()
        self._listen_on_host()

    def _step(self, do: list[str], undo: list[str]) -> None:
        ip(*do)
        self.undo.append(undo)

    def _listen_beyond(self) -> None:
        self.process = runner.spawn(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", LISTENER,
             str(self.port), str(self.log), *BEYOND],
            log_path=self.log.with_suffix(".err"))
        assert runner.wait_until(lambda: Path(f"{self.log}.ready").exists(), timeout=10), \
            self.log.with_suffix(".err").read_text()

    def host_addresses(self) -> list[str]:
        """Every address of the host outside the test's and the sandboxes' links."""
        found = []
        for link in json.loads(ip("-j", "address", "show").stdout):
            if link["ifname"].startswith(("egr", "w")) and link["ifname"] != self.host_if:
                continue
            found += [info["local"] for info in link.get("addr_info", [])
                      if not info["local"].startswith(("127.", "::1"))]
        return found

    def sandbox_link_local(self) -> list[str]:
        """IPv6 link-local addresses of the host's ends of this agent's sandbox links."""
        found = []
        for link in json.loads(ip("-j", "address", "show").stdout):
            if link["ifname"].startswith(f"w{self.instance}h"):
                found += [info["local"] for info in link.get("addr_info", [])
                          if info["local"].startswith("fe80")]
        return found

    def _listen_on_host(self) -> None:
        for address in [a for a in self.host_addresses() if ":" not in a] + ["::"]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            if family == socket.AF_INET6:
                server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((address, self.port))
            server.listen(16)
            server.settimeout(0.2)
            self.host_listeners.append(server)
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            self.host_seen.append(f"{conn.getsockname()[0]} from {peer[0]}")
            conn.close()

    def seen_beyond(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def forward_sandboxes(self) -> None:
        """Forwarding on this agent's sandbox links (their namespaces exist by now)."""
        for name in os.listdir("/sys/class/net"):
            if name.startswith(f"w{self.instance}h"):
                sysctl_forwarding(name)

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)
        self.host_seen.clear()

    def down(self) -> None:
        self._stop.set()
        for server in self.host_listeners:
            server.close()
        if self.process is not None:
            runner.kill_group(self.process.pid)
            self.process.wait()
        for argv in reversed(self.undo):
            ip(*argv, check=False)


@pytest.fixture(scope="module")
def beyond(agent: AgentProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Beyond]:
    network = Beyond(agent.env["WELDR_INSTANCE_ID"], tmp_path_factory.mktemp("beyond"))
    try:
        network.up()
        yield network
    finally:
        network.down()


@pytest.fixture
def net(beyond: Beyond) -> Beyond:
    beyond.reset()
    return beyond


# ---------------------------------------------------------------------------------------------
# Probing from inside
# ---------------------------------------------------------------------------------------------

def probe_exec(http: httpx.Client, bucket: str, net: Beyond, targets: list[str]) -> dict:
    # The sandbox (and its netns) exist once a command ran; forwarding is then switched on.
    response = http.post("/exec", json={"bucket": bucket, "command": ["true"]})
    assert response.status_code == 200, response.text
    net.forward_sandboxes()
    response = http.post("/exec", json={
        "bucket": bucket, "command": ["python3", "-c", PROBE, str(net.port), json.dumps(targets)],
        "timeout": 120})
    assert response.status_code == 200, response.text
    assert response.json()["exit_code"] == 0, response.json()
    return json.loads(response.json()["stdout"])


def all_targets(net: Beyond) -> list[str]:
    return [*BEYOND, *net.host_addresses(), *net.sandbox_link_local()]


def reached(results: dict) -> list[str]:
    return sorted(target for target, outcome in results.items() if outcome == "ok")


def test_by_default_nothing_private_link_local_cgnat_or_the_host_is_reached(
        http: httpx.Client, bucket: str, net: Beyond) -> None:
    # given the default policy (internet) and listeners on every kind of address
    targets = all_targets(net)

    # when a command in the sandbox connects to each
    results = probe_exec(http, bucket, net, targets)

    # then only the public-like address answers (proving the path beyond works at all)
    assert reached(results) == [PUBLIC], results
    assert net.seen_beyond() == [PUBLIC]
    assert net.host_seen == []
    assert results[PRIVATE] == os.strerror(errno.EHOSTUNREACH)


def test_sandboxes_have_no_ipv6_and_reach_no_host_port_over_it(
        http: httpx.Client, bucket: str, net: Beyond) -> None:
    # given a listener on every IPv6 address of the host (bound to ::) and the ULA beyond it
    response = http.post("/exec", json={"bucket": bucket, "command": ["cat", "/proc/net/if_inet6"]})
    assert response.status_code == 200, response.text
    six = [a for a in net.host_addresses() if ":" in a] + ["fd57:e9a1:5d2c::7"]

    # when a command connects to each, and to the host's ends of the sandbox links
    results = probe_exec(http, bucket, net, six + net.sandbox_link_local())

    # then nothing answers: the sandbox has no IPv6 address but the loopback's, and the host's
    # ends of the links have none either
    assert reached(results) == [], results
    assert net.host_seen == [] and net.seen_beyond() == []
    interfaces = {line.split()[-1] for line in response.json()["stdout"].splitlines()}
    assert interfaces <= {"lo"}, response.json()["stdout"]
    assert net.sandbox_link_local() == []


def test_an_allow_entry_opens_that_address_and_applies_to_a_running_sandbox(
        http: httpx.Client, bucket: str, net: Beyond, policy: None) -> None:
    targets = all_targets(net)
    assert reached(probe_exec(http, bucket, net, targets)) == [PUBLIC]

    # when the bucket allows one private address (the sandbox keeps running)
    put = http.put(f"/mounts/{bucket}/egress", json={"allow": [PRIVATE]})
    assert put.status_code == 200, put.text
    assert put.json()["source"] == "bucket" and put.json()["mode"] == "internet"

    # then that address answers too, and nothing else does
    net.reset()
    assert reached(probe_exec(http, bucket, net, targets)) == sorted([PUBLIC, PRIVATE])
    assert sorted(net.seen_beyond()) == sorted([PUBLIC, PRIVATE]) and net.host_seen == []


def test_allowlist_mode_reaches_only_what_it_names_and_a_broad_entry_reopens_nothing(
        http: httpx.Client, bucket: str, net: Beyond, policy: None) -> None:
    targets = all_targets(net)

    # the metadata address, named explicitly, is the only thing reachable
    assert http.put(f"/mounts/{bucket}/egress", json={
        "mode": "allowlist", "allow": [f"{METADATA}/32"]}).status_code == 200
    assert reached(probe_exec(http, bucket, net, targets)) == [METADATA]

    # 0.0.0.0/0 and ::/0 are the internet, not the protected ranges or the host
    assert http.put(f"/mounts/{bucket}/egress", json={
        "mode": "allowlist", "allow": ["0.0.0.0/0", "::/0"]}).status_code == 200
    assert reached(probe_exec(http, bucket, net, targets)) == [PUBLIC]

    # a deny entry wins over an allow entry
    assert http.put(f"/mounts/{bucket}/egress", json={
        "mode": "internet", "allow": [PRIVATE], "deny": [PUBLIC, PRIVATE]}).status_code == 200
    assert reached(probe_exec(http, bucket, net, targets)) == []
    assert net.host_seen == []
    assert sorted(set(net.seen_beyond())) == sorted([METADATA, PUBLIC])


def test_none_reaches_nothing(http: httpx.Client, bucket: str, net: Beyond,
                              policy: None) -> None:
    assert http.put(f"/mounts/{bucket}/egress", json={"mode": "none"}).status_code == 200

    results = probe_exec(http, bucket, net, all_targets(net))

    assert reached(results) == [], results
    assert net.seen_beyond() == [] and net.host_seen == []


def test_a_preview_app_gets_its_buckets_policy_and_its_changes(
        http: httpx.Client, bucket: str, net: Beyond, policy: None, ports_lock: None) -> None:
    # given a policy allowing one private address only, and an app that probes on request
    assert http.put(f"/mounts/{bucket}/egress", json={
        "mode": "allowlist", "allow": [PRIVATE]}).status_code == 200
    workspace = Path(http.get(f"/mounts/{bucket}").json()["path"])
    (workspace / "probe.py").write_text(PROBE)
    (workspace / "server.py").write_text(PROBE_SERVER)
    started = http.post("/previews/start", json={"bucket": bucket,
                                                 "command": "python3 server.py"})
    assert started.status_code == 201, started.text
    port = started.json()["port"]
    try:
        net.forward_sandboxes()
        targets = all_targets(net)

        def probe() -> dict:
            response = httpx.get(f"http://127.0.0.1:{port}/probe", timeout=120, params={
                "port": str(net.port), "t": json.dumps(targets)})
            assert response.status_code == 200, response.text
            return response.json()

        assert runner.wait_until(lambda: _answers(port), timeout=60)
        # then the app reaches that address and nothing else
        assert reached(probe()) == [PRIVATE]

        # when the policy changes while the app runs: nothing at all (the proxy still reaches
        # the app, which is how this answer comes back)
        assert http.put(f"/mounts/{bucket}/egress", json={"mode": "none"}).status_code == 200
        assert reached(probe()) == []
        assert net.seen_beyond() == [PRIVATE] and net.host_seen == []
    finally:
        http.post("/previews/stop", json={"bucket": bucket})


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /nothing HTTP/1.0\r\n\r\n")
            return bool(s.recv(1))
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The API's checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "code"), [
    ({"mode": "open"}, "invalid"),
    ({"allow": "10.0.0.0/8"}, "invalid_egress"),
    ({"allow": ["10.0.0.1/8"]}, "invalid_cidr"),
    ({"deny": ["300.1.2.3"]}, "invalid_cidr"),
    ({"allow": ["fd00::/129"]}, "invalid_cidr"),
    ({"allow": ["exa mple.com"]}, "invalid_host"),
    ({"allow": ["-bad-.example"]}, "invalid_host"),
    ({"allow": [f"198.51.{i // 256}.{i % 256}" for i in range(101)]}, "too_many_entries"),
    # Refused before any name is looked up: no query leaves the machine.
    ({"allow": [f"h{i}.example" for i in range(21)]}, "too_many_entries"),
    ({"allow": ["127.0.0.1"]}, "egress_forbidden"),
    ({"allow": ["localhost"]}, "egress_forbidden"),
    ({"allow": ["10.64.12.2"]}, "egress_forbidden"),
    ({"allow": ["0.0.0.0/1", "10.0.0.0/8", "10.64.0.0/10"]}, "egress_forbidden"),
    ({"mode": "internet", "colour": "red"}, "invalid"),
])
def test_bad_policies_are_refused_with_a_clear_400(
        http: httpx.Client, bucket: str, policy: None, body: dict, code: str) -> None:
    response = http.put(f"/mounts/{bucket}/egress", json=body)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == code, response.json()
    assert http.get(f"/mounts/{bucket}/egress").json()["source"] == "default"


def test_a_policy_is_stored_with_its_host_names_pinned_and_deleted_back_to_the_default(
        http: httpx.Client, policy: None) -> None:
    # Not mounted: a policy may be set ahead of a bucket's first sandbox.
    name = f"egr-{secrets.token_hex(3)}"
    assert http.get(f"/mounts/{name}/egress").json() == {
        "bucket": name, "source": "default", "mode": "internet", "allow": [], "deny": [],
        "pinned": {}, "operator_deny": [], "updated_at": None}

    # /etc/hosts names only: no query leaves the machine
    body = {"mode": "allowlist", "allow": [f"{PUBLIC}", "2001:db8::/32"],
            "deny": ["localhost", "203.0.113.0/28"]}
    put = http.put(f"/mounts/{name}/egress", json=body)
    assert put.status_code == 200, put.text
    got = http.get(f"/mounts/{name}/egress").json()
    assert got["source"] == "bucket" and got["mode"] == "allowlist"
    assert got["allow"] == body["allow"] and got["deny"] == body["deny"]
    assert "127.0.0.1" in got["pinned"]["localhost"]
    assert http.get("/openapi.json").json()["paths"][
        "/mounts/{bucket}/egress"].keys() >= {"get", "put", "delete"}

    assert http.delete(f"/mounts/{name}/egress").json()["source"] == "default"
    assert http.put("/mounts/Not_A_Bucket/egress", json={}).json()["code"] == "invalid_bucket"
