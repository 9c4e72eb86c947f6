"""What an app can see and do from inside its sandbox (real containers, probed from inside)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from previews import services
from tests.exec.helpers import KEYCTL
from tests.previews.conftest import http_get, make_workspace, wait_status, write_node_app
from tests.servers import free_port
from weldr_agent import runner

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

PROBE_JS = """\
const net = require("net");
const fs = require("fs");
const { execSync } = require("child_process");

function probe(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: 2000 });
    const done = (result) => { socket.destroy(); resolve(result); };
    socket.on("connect", () => done("open"));
    socket.on("timeout", () => done("timeout"));
    socket.on("error", (e) => done(e.code));
  });
}

function attempt(command) {
  try { execSync(command, { stdio: "ignore" }); return "ok"; } catch (e) { return "denied"; }
}

(async () => {
  const results = { network: {}, writes: {} };
  // At once: a machine with many interfaces must not make the probe outlast the test's wait.
  const targets = JSON.parse(process.env.PROBE_TARGETS);
  const outcomes = await Promise.all(targets.map((target) => probe(target[0], target[1])));
  targets.forEach((target, i) => { results.network[target.join(":")] = outcomes[i]; });
  results.uid = execSync("id -u").toString().trim();
  results.ps = execSync("ps -e -o pid=,uid=,args=").toString();
  if (process.env.KEYCTL) {
    results.keyctl = execSync("python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); " +
      `print(l.syscall(${process.env.KEYCTL}, 0, -3, 0), ctypes.get_errno())'`).toString().trim();
    results.proc_keys = fs.readFileSync("/proc/keys").length;
  }
  for (const path of ["/etc/owned", "/usr/owned", "/owned", "/tmp/owned", "owned",
                      process.env.OUTSIDE + "/owned"]) {
    results.writes[path] = attempt(`touch '${path}'`);
  }
  // /.weldr: a warm sandbox's start fifo and the app's run.sh, read-only and not the app's
  results.weldr = {
    fifo: attempt("sh -c 'echo go > /.weldr/start'"),
    chmod: attempt("chmod 600 /.weldr/start"),
    script: attempt("sh -c 'echo exit >> /.weldr/run.sh'"),
  };
  fs.writeFileSync("results.json", JSON.stringify(results));
  require("http").createServer((q, s) => s.end("probed"))
    .listen(Number(process.env.PORT), process.env.HOST);
})();
"""


def host_addresses() -> list[str]:
    listed = runner.run(["ip", "-4", "-o", "addr", "show"], timeout=10).stdout
    addresses = [line.split()[3].split("/")[0] for line in listed.splitlines()]
    return [a for a in addresses if not a.startswith("127.")]


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A server on every host address: stands for the agent's API and any other host port."""
    server = socket.create_server(("0.0.0.0", free_port()))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_an_app_reaches_nothing_on_the_host_and_sees_only_itself(
        api: APIClient, previews: None, workspace: Path, host_listener: int) -> None:
    # given: another preview and a host port open on every address
    neighbour = make_workspace("neighbour-app")
    write_node_app(neighbour)
    other = api.post("/previews/start", {"bucket": neighbour.name, "command": "node server.js"},
                     format="json").json()
    http_get(f"http://127.0.0.1:{other['port']}/")
    neighbour_ip = services._live[neighbour.name].ns.ip
    targets = [[address, host_listener] for address in host_addresses()]
    targets += [[address, other["port"]] for address in host_addresses()]
    targets += [[neighbour_ip, other["port"]], ["127.0.0.1", other["port"]]]
    # The neighbour's workspace exists on the host and is writable by the sandbox's user.
    outside = neighbour
    (workspace / "probe.js").write_text(PROBE_JS)

    # when
    started = api.post("/previews/start", {
        "bucket": workspace.name, "command": "node probe.js",
        "env": {"PROBE_TARGETS": json.dumps(targets), "OUTSIDE": str(outside),
                "KEYCTL": str(KEYCTL)},
    }, format="json").json()
    http_get(f"http://127.0.0.1:{started['port']}/", timeout=120)
    results = json.loads((workspace / "results.json").read_text())

    # then: every address of the host, the agent's port and the neighbour are out of reach
    assert len(results["network"]) == len(targets)
    # (EHOSTUNREACH: an address listed above went away while the probe ran — a warm namespace's
    # veth removed by its pool; unreachable either way)
    assert set(results["network"].values()) <= {"timeout", "ECONNREFUSED", "EHOSTUNREACH"}, \
        results["network"]
    # ... its own loopback is its own: nothing listens there
    assert results["network"][f"127.0.0.1:{other['port']}"] == "ECONNREFUSED"
    assert results["uid"] == "1000"
    processes = [line.split(None, 2) for line in results["ps"].strip().splitlines()]
    assert processes[0][:2] == ["1", "1000"] and processes[0][2] == "/bin/sh /.weldr/run.sh"
    assert {uid for _, uid, _ in processes} == {"1000"}
    assert all(args.split()[0] in {"/bin/sh", "node", "ps"} for _, _, args in processes), \
        results["ps"]
    assert not any("server.js" in args for _, _, args in processes)
    assert results["writes"] == {
        "/etc/owned": "denied", "/usr/owned": "denied", "/owned": "denied",
        "/tmp/owned": "ok", "owned": "ok", f"{outside}/owned": "denied",
    }
    assert results["weldr"] == {"fifo": "denied", "chmod": "denied", "script": "denied"}
    assert (workspace / "owned").exists()
    assert not (outside / "owned").exists()
    # the kernel's keyrings: the syscall is refused (seccomp), the file masked
    assert (results["keyctl"], results["proc_keys"]) == ("-1 1", 0)


def test_the_sandboxs_own_host_address_is_closed_too(api: APIClient, previews: None,
                                                     workspace: Path,
                                                     host_listener: int) -> None:
    (workspace / "probe.js").write_text(PROBE_JS)
    # The host end of the app's own veth is only known once it runs: probe it from a shell.
    command = ('ip -4 route show default | cut -d" " -f3 > gw.txt; '
               'export PROBE_TARGETS="[[\\"$(cat gw.txt)\\", ' + str(host_listener) + ']]"; '
               "exec node probe.js")

    started = api.post("/previews/start", {"bucket": workspace.name, "command": command},
                       format="json").json()
    http_get(f"http://127.0.0.1:{started['port']}/", timeout=120)

    results = json.loads((workspace / "results.json").read_text())
    gateway = (workspace / "gw.txt").read_text().strip()
    assert gateway == services._live[workspace.name].ns.host_ip
    assert results["network"] == {f"{gateway}:{host_listener}": "timeout"}


def test_an_app_past_its_memory_limit_dies_alone(api: APIClient, previews: None,
                                                 workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # given: a healthy app with the default limit
    write_node_app(workspace)
    healthy = api.post("/previews/start", {"bucket": workspace.name, "command": "node server.js"},
                       format="json").json()
    http_get(f"http://127.0.0.1:{healthy['port']}/")
    hog = make_workspace("memory-hog")
    (hog / "hog.js").write_text(
        "const kept = [];\n"
        "setInterval(() => { kept.push(Buffer.alloc(8 * 1024 * 1024, 1));\n"
        "  console.log(`holding ${kept.length * 8} MB`); }, 5);\n")
    settings.SANDBOX_MEMORY_MB = 96

    # when
    api.post("/previews/start", {"bucket": hog.name, "command": "node hog.js"}, format="json")

    # then: the hog is killed by the kernel (SIGKILL: 137), the other app still serves
    assert wait_status(hog.name, {"failed", "exited"}, timeout=120) == "failed"
    ended = api.get(f"/previews/{hog.name}").json()
    assert ended["exit_code"] == 137
    assert "holding" in api.get(f"/previews/{hog.name}/logs").content.decode()
    assert api.get(f"/previews/{workspace.name}").json()["status"] == "running"
    assert http_get(f"http://127.0.0.1:{healthy['port']}/")[0] == 200
