"""Attacks on the sandboxes themselves, performed from inside real ones (runc, a real agent).

The exec daemon's control socket (planted links, an impostor daemon), user namespaces (the
kernel's larger attack surface) and the host's /etc. Each attack must leave the host untouched:
the agent never connects anywhere the sandbox chose, never talks to a process that is not the
sandbox's daemon, and the sandbox sees none of the host's configuration.
"""

# ruff: noqa: F811 - the exec tests' fixtures are imported by name and used as arguments
from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import AgentProcess, agent_client, running_agent
from tests.exec.conftest import bucket, mount, unmount, workspace  # noqa: F401 (fixtures)
from weldr_agent import runner

pytestmark = pytest.mark.slow

SANDBOX_UID = 1000


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """A real agent process (daphne) with its own state, workspace and runtime directory."""
    yield from running_agent(tmp_path_factory.mktemp("agent"), EXEC_MAX_CONCURRENT="3")


@pytest.fixture(scope="module")
def http(agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(agent, timeout=60)


def run(http: httpx.Client, bucket: str, command, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = http.post("/exec", json={"bucket": bucket, "command": command, **extra})
    assert response.status_code == 200, response.text
    return response.json()


class HostListener:
    """A unix socket on the host that records whoever connects to it (and what they send)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections: list[bytes] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            conn.settimeout(1.0)
            try:
                self.connections.append(conn.recv(65536))
            except OSError:
                self.connections.append(b"")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture
def host_socket() -> Iterator[HostListener]:
    # Short path: sun_path holds 108 bytes. World-writable parent so that the sandbox's user
    # could even reach it if it were ever on its side.
    directory = Path(f"/tmp/weldr-planted-{secrets.token_hex(4)}")
    directory.mkdir()
    listener = HostListener(directory / "host.sock")
    try:
        yield listener
    finally:
        listener.close()
        (directory / "host.sock").unlink(missing_ok=True)
        directory.rmdir()


# ---------------------------------------------------------------------------------------------
# The exec daemon's control socket
# ---------------------------------------------------------------------------------------------

PLANT = """\
for socket in /run/weldr/sandboxd.sock /run/weldr/*.sock; do
  rm -f "$socket" 2>/dev/null; ln -sf {target} "$socket" 2>/dev/null
done
mv /run/weldr /run/weldr.gone 2>/dev/null && ln -s {directory} /run/weldr 2>/dev/null
ls -la /run/weldr/ 2>&1 || true
"""


def test_a_planted_link_never_redirects_the_agent_to_a_host_socket(
        http: httpx.Client, bucket: str, host_socket: HostListener) -> None:
    # given a command has run (the sandbox and its daemon are up)
    assert run(http, bucket, "echo up")["stdout"] == "up\n"

    # when a command replaces the control socket (and its directory) with links to a host socket
    run(http, bucket, PLANT.format(target=host_socket.path, directory=host_socket.path.parent))
    response = http.post("/exec", json={"bucket": bucket, "command": "echo still-here"})

    # then the agent never connected to the host socket, and the next command runs (or fails
    # cleanly: a JSON error, never a hang)
    time.sleep(0.5)
    assert host_socket.connections == []
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "still-here\n"


IMPOSTOR = """\
import json, os, socket, sys
path = "/run/weldr/sandboxd.sock"
try:
    os.unlink(path)
except OSError:
    pass
try:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
except OSError as error:
    open("impostor.state", "w").write("refused " + str(error))
    sys.exit(0)
open("impostor.state", "w").write("listening")
server.settimeout(20)
try:
    conn, _ = server.accept()
except OSError:
    open("impostor.state", "w").write("nobody came")
    sys.exit(0)
data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
open("impostor.stolen", "wb").write(data)
conn.sendall(b'{"event": "start", "pid": 1}\\n{"event": "exit", "exit_code": 0}\\n')
"""


def test_a_process_in_the_sandbox_cannot_impersonate_the_daemon(
        http: httpx.Client, bucket: str, workspace: Path) -> None:
    # given a command in the sandbox that tries to serve the daemon's socket itself
    for name in ("impostor.state", "impostor.stolen"):
        (workspace / name).unlink(missing_ok=True)
    (workspace / "impostor.py").write_text(IMPOSTOR)
    with ThreadPoolExecutor(1) as pool:
        impostor = pool.submit(run, http, bucket, ["python3", "impostor.py"], timeout=30)
        assert runner.wait_until(lambda: (workspace / "impostor.state").exists(), timeout=20)

        # when the agent runs the next command, with a secret in its environment
        real = http.post("/exec", json={"bucket": bucket, "env": {"TOKEN": "s3cr3t"},
                                        "command": "echo ran-for-real > real.txt; echo ok"})
        impostor.result()

    # then the command ran in the real daemon, and the impostor received nothing
    assert real.status_code == 200, real.text
    assert real.json()["stdout"] == "ok\n", real.json()
    assert (workspace / "real.txt").read_text() == "ran-for-real\n"
    assert not (workspace / "impostor.stolen").exists()


def _exec_bundle(agent: AgentProcess, bucket: str) -> Path:
    runtime = Path(agent.env["WELDR_RUNTIME_DIR"])
    return runtime / "exec" / f"weldr-{agent.env['WELDR_INSTANCE_ID']}-exec-{bucket}"


def test_the_agent_refuses_a_control_socket_peer_that_is_not_the_daemon(
        agent: AgentProcess, http: httpx.Client, bucket: str) -> None:
    # given the sandbox is running, and its socket name is taken on the host by a process of
    # the sandbox's uid that is not the sandbox's daemon (what any mix-up or a reused name
    # would look like)
    assert run(http, bucket, "echo up")["stdout"] == "up\n"
    bundle = _exec_bundle(agent, bucket)
    sockets = list(bundle.glob("*.sock")) + list(bundle.glob("*/*.sock"))
    assert len(sockets) == 1, sockets
    # (a directory the sandbox's uid can reach: pytest's are root's)
    own_dir = Path(f"/tmp/weldr-impostor-{secrets.token_hex(4)}")
    own_dir.mkdir()
    os.chown(own_dir, SANDBOX_UID, SANDBOX_UID)
    record = own_dir / "impostor.log"
    sockets[0].unlink()
    script = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(4)\n"
              "open(sys.argv[2], 'w').write('listening\\n')\n"
              "while True:\n"
              "    c, _ = s.accept(); data = c.recv(65536)\n"
              "    open(sys.argv[2], 'a').write('got %d bytes\\n' % len(data))\n"
              "    c.sendall(b'{\"event\": \"start\", \"pid\": 1}\\n{\"event\": \"exit\", "
              "\"exit_code\": 0}\\n')\n")
    # (it cannot bind in the sandbox's bundle, root's: it binds in its own directory and the
    # socket is moved into place)
    own = own_dir / "impostor.sock"
    impostor = runner.popen(["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                             "--clear-groups", "python3", "-c", script, own, record])
    try:
        assert runner.wait_until(lambda: record.exists() and "listening" in record.read_text(),
                                 timeout=10)
        own.rename(sockets[0])

        # when a command is run
        response = http.post("/exec", json={"bucket": bucket, "env": {"TOKEN": "s3cr3t"},
                                            "command": "echo real"})
    finally:
        runner.stop(impostor, grace=1)
        log = record.read_text()
        shutil.rmtree(own_dir)

    # then the impostor got nothing (the agent hung up on it before sending a byte: no request,
    # no environment, no descriptors), said so in its log, and ran the command in a new sandbox
    assert set(log.splitlines()[1:]) <= {"got 0 bytes"}, log
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "real\n"
    assert "refused the control socket" in Path(agent.log).read_text()


# ---------------------------------------------------------------------------------------------
# User namespaces and setns
# ---------------------------------------------------------------------------------------------

USERNS_PROBE = """\
unshare -U -r id >/dev/null 2>&1 && echo unshare-r:allowed || echo unshare-r:refused
unshare -U true >/dev/null 2>&1 && echo unshare:allowed || echo unshare:refused
python3 - <<'PY'
import ctypes, mmap, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000

def in_child(probe):
    # Each probe in a fresh child: a namespace entered by one must not decide the next.
    pid = os.fork()
    if pid == 0:
        os._exit(probe())
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

def unshare():
    return 0 if libc.unshare(CLONE_NEWUSER) == 0 else ctypes.get_errno()

def setns():
    # Into our own user namespace: EINVAL without a filter, EPERM with one.
    libc.setns(os.open("/proc/self/ns/user", os.O_RDONLY), CLONE_NEWUSER)
    return ctypes.get_errno()

def clone3():
    args = (ctypes.c_uint64 * 11)(CLONE_NEWUSER, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0)
    pid = libc.syscall(435, ctypes.byref(args), 88)
    if pid == 0:
        os._exit(0)
    return 0 if pid > 0 else ctypes.get_errno()

def unshare_i386():
    # The 32-bit ABI (int 0x80: another syscall table, another audit arch), which a filter
    # checking x86_64 numbers alone lets through. push rbx; mov eax, 310 (unshare);
    # mov ebx, CLONE_NEWUSER; int 0x80; pop rbx; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(bytes.fromhex("53b836010000bb00000010cd805bc3"))
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return -ctypes.CFUNCTYPE(ctypes.c_int)(address)()

print("unshare-py:" + ("allowed" if in_child(unshare) == 0 else "refused"))
print("setns-errno:%d" % in_child(setns))
print("clone3-errno:%d" % in_child(clone3))
print("unshare-i386:" + ("allowed" if in_child(unshare_i386) == 0 else "refused"))
print("fork:%d" % in_child(lambda: 7))
PY
"""
USERNS_REFUSED = ["unshare-r:refused", "unshare:refused", "unshare-py:refused",
                  "setns-errno:1", "clone3-errno:38", "unshare-i386:refused", "fork:7"]


def test_user_namespaces_and_setns_are_refused_to_commands(http: httpx.Client,
                                                           bucket: str) -> None:
    assert os.uname().machine == "x86_64"  # the probe's 32-bit call is x86 machine code
    result = run(http, bucket, USERNS_PROBE)

    assert result["stdout"].split() == USERNS_REFUSED, result


def _preview(http: httpx.Client, bucket: str, workspace: Path, command: str) -> Path:
    results = workspace / "preview.out"
    results.unlink(missing_ok=True)
    (workspace / "probe.sh").write_text(command)
    (workspace / "server.js").write_text(
        "require('http').createServer((q, s) => s.end('ok'))"
        ".listen(Number(process.env.PORT), process.env.HOST);\n")
    started = http.post("/previews/start", json={
        "bucket": bucket, "command": "sh probe.sh > preview.out 2>&1; exec node server.js"})
    assert started.status_code == 201, started.text
    try:
        assert runner.wait_until(lambda: results.exists() and "done" in results.read_text(),
                                 timeout=60), results.read_text() if results.exists() else ""
    finally:
        http.post("/previews/stop", json={"bucket": bucket})
    return results


def test_user_namespaces_and_setns_are_refused_to_previews(
        http: httpx.Client, bucket: str, workspace: Path, ports_lock: None) -> None:
    results = _preview(http, bucket, workspace, USERNS_PROBE + "echo done\n")

    assert results.read_text().split()[:-1] == USERNS_REFUSED, results.read_text()


# ---------------------------------------------------------------------------------------------
# The host's /etc
# ---------------------------------------------------------------------------------------------

ETC_PROBE = """\
for path in /etc/shadow /etc/gshadow /etc/ssh /etc/gitconfig /etc/npmrc /etc/pip.conf \
            /etc/machine-id /etc/hostname /etc/subuid /etc/sudoers /etc/postgresql /etc/redis; do
  test -e "$path" && echo "present $path"
done
id
getent passwd sandbox | cut -d: -f1,3
test -s /etc/ssl/certs/ca-certificates.crt && echo ca-certificates
awk 'BEGIN { print "awk works" }'
node -e 'console.log("node " + process.version.slice(0, 1))'
python3 -c 'import ssl; ssl.create_default_context(); print("python ssl")'
repo=$(mktemp -d) && cd "$repo" && git init -q && echo x > x && git add x && \
  GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b \
  git commit -qm x && git log --format=%s
mkdir -p "$TMPDIR/npm/lib" "$TMPDIR/npm/app" && cd "$TMPDIR/npm/lib" && \
  echo '{"name": "lib", "version": "1.0.0"}' > package.json && cd ../app && \
  echo '{"name": "app", "version": "1.0.0"}' > package.json && \
  npm install --offline --no-audit --no-fund ../lib >/dev/null 2>&1 && \
  node -e 'require("lib/package.json"); console.log("npm install")'
(sleep 0.2; echo background) & wait
echo piped | tr a-z A-Z
echo done
"""


def _etc_checks(output: str) -> None:
    lines = output.splitlines()
    assert not [line for line in lines if line.startswith("present")], output
    for expected in ("uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)",
                     "sandbox:1000", "ca-certificates", "awk works", "node v", "python ssl",
                     "x", "npm install", "background", "PIPED", "done"):
        assert expected in lines, output


def test_exec_sees_its_own_etc_not_the_hosts(http: httpx.Client, bucket: str) -> None:
    result = run(http, bucket, ETC_PROBE, timeout=60)

    _etc_checks(result["stdout"] + result["stderr"])


def test_previews_see_their_own_etc_not_the_hosts(
        http: httpx.Client, bucket: str, workspace: Path, ports_lock: None) -> None:
    results = _preview(http, bucket, workspace, ETC_PROBE)

    _etc_checks(results.read_text())
