"""POST /exec against a real agent process and real sandboxes (runc)."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess  # noqa: F401  (never used: commands run through the API)
from pathlib import Path

import httpx
import pytest

from tests.exec.helpers import KEYCTL, processes_with, sse_events
from weldr_agent import runner

pytestmark = pytest.mark.slow


def run(http: httpx.Client, bucket: str, command, **extra) -> dict:  # type: ignore[no-untyped-def]
    response = http.post("/exec", json={"bucket": bucket, "command": command, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def test_exit_code_and_separate_streams(http: httpx.Client, bucket: str) -> None:
    result = run(http, bucket, "echo out; echo err >&2; exit 7")

    assert result["exit_code"] == 7
    assert result["stdout"] == "out\n"
    assert result["stderr"] == "err\n"
    assert result["timed_out"] is False and result["truncated"] is False
    assert result["duration_ms"] > 0


def test_argv_list_runs_without_a_shell(http: httpx.Client, bucket: str) -> None:
    result = run(http, bucket, ["printf", "%s|", "a b", "$HOME"])

    assert result["stdout"] == "a b|$HOME|"


def test_stdin_text_and_binary(http: httpx.Client, bucket: str) -> None:
    assert run(http, bucket, "cat", stdin="hello\nworld\n")["stdout"] == "hello\nworld\n"
    raw = bytes(range(256))

    result = run(http, bucket, "cat", stdin_base64=base64.b64encode(raw).decode())

    assert base64.b64decode(result["stdout_base64"]) == raw


def test_env_is_clean_and_explicit(http: httpx.Client, bucket: str) -> None:
    result = run(http, bucket, "echo $GREETING; env", env={"GREETING": "hi there"})

    assert result["stdout"].startswith("hi there\n")
    # Nothing of the agent's own environment reaches a command.
    for secret in ("S3_SECRET_ACCESS_KEY", "DATABASE_URL", "AWS_", "WELDR_", "DJANGO_"):
        assert secret not in result["stdout"]


def test_cwd_is_relative_to_the_workspace(http: httpx.Client, bucket: str,
                                          workspace: Path) -> None:
    run(http, bucket, "mkdir -p sub/dir")

    result = run(http, bucket, "pwd; ls -ld .", cwd="sub/dir")

    assert result["stdout"].splitlines()[0] == "/workspace/sub/dir"
    assert (workspace / "sub" / "dir").is_dir()


@pytest.mark.parametrize("cwd", ["..", "../..", "/etc", "sub/../../x", "missing-dir", "a\x00b"])
def test_cwd_outside_or_missing_is_refused(http: httpx.Client, bucket: str, cwd: str) -> None:
    response = http.post("/exec", json={"bucket": bucket, "command": "pwd", "cwd": cwd})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"


def test_runs_as_the_sandbox_user_with_a_read_only_system(http: httpx.Client, bucket: str,
                                                          workspace: Path) -> None:
    result = run(http, bucket, "id -u; touch /usr/x || echo ro; echo data > made-here")

    assert result["stdout"].splitlines() == ["1000", "ro"]
    assert (workspace / "made-here").read_text() == "data\n"
    assert (workspace / "made-here").stat().st_uid == 1000


def test_kernel_attack_surface_is_reduced(http: httpx.Client, bucket: str) -> None:
    # keyctl(KEYCTL_GET_KEYRING_ID, session keyring): allowed for any process without seccomp
    probe = (f"import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
             f"print(libc.syscall({KEYCTL}, 0, -3, 0), ctypes.get_errno())")
    result = run(http, bucket, ["python3", "-c", probe])
    assert result["stdout"].split() == ["-1", "1"]  # EPERM from the seccomp profile

    # the command's /proc is its own namespace's (no other process of the sandbox), and the
    # kernel's knobs are read-only to it
    proc = run(http, bucket, "ls -d /proc/[0-9]*; echo 1 > /proc/sys/kernel/sysrq || echo ro")
    lines = proc["stdout"].split()
    assert lines[0] == "/proc/1" and len(lines) <= 3 and lines[-1] == "ro", proc


def test_the_sandbox_resolves_its_own_host_name(http: httpx.Client, bucket: str) -> None:
    # without it, git's default identity and getfqdn() wait ~10 s for an unreachable DNS server
    result = run(http, bucket, "hostname; getent ahostsv4 $(hostname) | head -1; "
                               "python3 -c 'import socket; print(socket.getfqdn())'", timeout=5)
    assert result["timed_out"] is False, result
    name, v4, fqdn = result["stdout"].splitlines()
    assert name == "sandbox" and v4.split()[0] == "127.0.0.1" and fqdn in {"sandbox", "localhost"}


def test_timeout_kills_the_whole_tree(http: httpx.Client, bucket: str) -> None:
    # given a command whose children ignore SIGTERM, one of them in a session of its own
    command = ("trap '' TERM; (trap '' TERM; exec sleep 31.71) & "
               "setsid sh -c \"trap '' TERM; sleep 31.72\" & sleep 31.73")

    result = run(http, bucket, command, timeout=1)

    assert result["timed_out"] is True
    assert result["exit_code"] == 137
    assert result["duration_ms"] < 30_000
    for marker in ("sleep 31.71", "sleep 31.72", "sleep 31.73"):
        assert runner.wait_until(lambda m=marker: not processes_with(m), timeout=10), marker


def test_output_is_capped_and_flagged(http: httpx.Client, bucket: str) -> None:
    # EXEC_OUTPUT_MAX_BYTES is 64 KiB for this agent.
    result = run(http, bucket, "head -c 1000000 /dev/zero | tr '\\0' x; echo tail >&2")

    assert result["truncated"] is True
    assert result["stdout"] == "x" * 65536
    assert result["stderr"] == "tail\n"
    assert result["exit_code"] == 0


def test_non_utf8_output_survives(http: httpx.Client, bucket: str) -> None:
    result = run(http, bucket, "printf 'ok\\377\\376end'")

    assert base64.b64decode(result["stdout_base64"]) == b"ok\xff\xfeend"
    assert result["stdout"] == "ok\ufffd\ufffdend"
    assert "stdout_base64" not in run(http, bucket, "printf 'h\\303\\251'")  # valid UTF-8 (é)


def test_stream_delivers_output_as_it_happens(http: httpx.Client, bucket: str,
                                              workspace: Path) -> None:
    body = {"bucket": bucket, "command": "echo a; sleep 2; touch b-printed; echo b"}
    (workspace / "b-printed").unlink(missing_ok=True)
    with http.stream("POST", "/exec", json=body,
                     headers={"Accept": "text/event-stream"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        assert next(events)[0] == "start"
        kind, data = next(events)
        # then `a` arrives while the command is still sleeping, before `b` is printed
        assert (kind, data) == ("stdout", {"data": "a\n"})
        assert not (workspace / "b-printed").exists()
        rest = list(events)
    assert ("stdout", {"data": "b\n"}) in rest
    assert rest[-1][0] == "exit" and rest[-1][1]["exit_code"] == 0


def test_stream_waits_for_the_client_not_for_a_clock(http: httpx.Client, bucket: str,
                                                     workspace: Path) -> None:
    # The command prints `b` only after the test has seen `a`: without streaming it would
    # time out instead.
    body = {"bucket": bucket, "timeout": 60,
            "command": "echo a; while [ ! -e go ]; do sleep 0.05; done; echo b"}
    (workspace / "go").unlink(missing_ok=True)
    with http.stream("POST", "/exec", json=body,
                     headers={"Accept": "text/event-stream"}) as response:
        events = sse_events(response)
        assert next(events)[0] == "start"
        assert next(events) == ("stdout", {"data": "a\n"})
        (workspace / "go").touch()
        rest = list(events)
    (workspace / "go").unlink()
    assert rest[0] == ("stdout", {"data": "b\n"})
    assert rest[-1][1]["timed_out"] is False


def test_stream_carries_stderr_and_non_utf8(http: httpx.Client, bucket: str) -> None:
    body = {"bucket": bucket, "command": "echo e >&2; printf '\\377'; exit 3"}
    with http.stream("POST", "/exec", json=body,
                     headers={"Accept": "text/event-stream"}) as response:
        events = list(sse_events(response))

    assert ("stderr", {"data": "e\n"}) in events
    binary = [data for kind, data in events if kind == "stdout"]
    assert base64.b64decode(binary[0]["data_base64"]) == b"\xff"
    assert events[-1][0] == "exit" and events[-1][1]["exit_code"] == 3


def test_client_hanging_up_ends_the_command(http: httpx.Client, bucket: str) -> None:
    body = {"bucket": bucket, "command": "echo started; exec sleep 33.31"}
    with http.stream("POST", "/exec", json=body,
                     headers={"Accept": "text/event-stream"}) as response:
        events = sse_events(response)
        next(events)
        assert next(events)[1] == {"data": "started\n"}
        assert processes_with("sleep 33.31")
    # the connection is closed here

    assert runner.wait_until(lambda: not processes_with("sleep 33.31"), timeout=15)


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]


def test_commands_cannot_reach_the_agent_or_the_host(http: httpx.Client, bucket: str,
                                                     agent) -> None:  # type: ignore[no-untyped-def]
    # The sandbox's default gateway is the host end of its veth: refused like the rest.
    script = (
        "import socket, struct, sys\n"
        "hosts = sys.argv[2:]\n"
        "for line in open('/proc/net/route').read().splitlines()[1:]:\n"
        "    fields = line.split()\n"
        "    if fields[1] == '00000000':\n"
        "        hosts.append(socket.inet_ntoa(struct.pack('<L', int(fields[2], 16))))\n"
        "for host in hosts:\n"
        "    try:\n"
        "        socket.create_connection((host, int(sys.argv[1])), timeout=3).close()\n"
        "        print(host, 'reached')\n"
        "    except OSError as error:\n"
        "        print(host, 'refused', error.errno)\n"
    )
    result = run(http, bucket, ["python3", "-c", script, str(agent.port), "127.0.0.1",
                                host_address()], timeout=30)

    lines = result["stdout"].splitlines()
    assert len(lines) == 3, result  # loopback, the host's address, the gateway
    assert all("refused" in line for line in lines), lines


def test_bad_input_is_a_4xx_in_the_error_shape(http: httpx.Client, bucket: str) -> None:
    cases = [
        ({"bucket": bucket}, 400, "invalid"),
        ({"bucket": bucket, "command": ""}, 400, "invalid"),
        ({"bucket": bucket, "command": []}, 400, "invalid"),
        ({"bucket": bucket, "command": "true", "timeout": 3601}, 400, "invalid"),
        ({"bucket": bucket, "command": "true", "timeout": 0}, 400, "invalid"),
        ({"bucket": bucket, "command": "true", "env": {"A=B": "x"}}, 400, "invalid"),
        ({"bucket": bucket, "command": "true", "stdin_base64": "%%%"}, 400, "invalid"),
        ({"bucket": "Not_A_Bucket", "command": "true"}, 400, "invalid"),
        ({"bucket": "not-mounted-here", "command": "true"}, 409, "not_mounted"),
    ]
    for body, status, code in cases:
        response = http.post("/exec", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code
        assert response.json()["detail"]


def test_needs_authentication(agent, bucket: str) -> None:  # type: ignore[no-untyped-def]
    response = httpx.post(f"{agent.url}/exec", json={"bucket": bucket, "command": "true"})

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _pid_namespaces(pid: int) -> int:
    """How many PID namespaces deep `pid` is (a command or a spare: one more than the daemon)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return len(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()) - 1


def _daemon_of_a_command(http: httpx.Client, bucket: str, marker: str) -> tuple[int, int, str]:
    """(daemon, command, background id): the sandbox's daemon, found as the parent of a
    running background command."""
    started = http.post("/exec", json={"bucket": bucket, "command": f"sleep {marker}",
                                       "background": True})
    assert started.status_code == 202, started.text
    assert runner.wait_until(lambda: processes_with(f"sleep {marker}"), timeout=10)
    command = processes_with(f"sleep {marker}")[0]
    daemon = int(Path(f"/proc/{command}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert "sandboxd.py" in Path(f"/proc/{daemon}/cmdline").read_text()
    return daemon, command, started.json()["id"]


def _exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _daemon_children(daemon: int, *, nested: bool) -> list[int]:
    """The daemon's children running sandboxd: the spare (nested, in a PID namespace of its
    own) or the spare maker (not nested, the daemon's own namespace)."""
    return [pid for pid in _children(daemon)
            if "sandboxd.py" in Path(f"/proc/{pid}/cmdline").read_text()
            and (_pid_namespaces(pid) > _pid_namespaces(daemon)) == nested]


def test_a_dead_spare_child_does_not_break_the_next_command(http: httpx.Client,
                                                            bucket: str) -> None:
    # given the sandbox's daemon and the child cloned ahead for the next request
    daemon, _, background = _daemon_of_a_command(http, bucket, "40.123")
    assert runner.wait_until(lambda: len(_daemon_children(daemon, nested=True)) == 1,
                             timeout=10)
    spare = _daemon_children(daemon, nested=True)[0]
    http.delete(f"/exec/{background}")

    # when the spare dies (killed, out of memory) before the next request
    os.kill(spare, signal.SIGKILL)
    assert runner.wait_until(lambda: spare not in _children(daemon), timeout=10)

    # then commands still run, each as PID 1 of its own namespace, and a new spare is made
    for _ in range(3):
        assert run(http, bucket, "echo $$")["stdout"] == "1\n"
    assert runner.wait_until(lambda: len(_daemon_children(daemon, nested=True)) == 1,
                             timeout=10)


def test_commands_run_when_the_spare_maker_is_gone(http: httpx.Client, bucket: str) -> None:
    # given the sandbox's daemon and the child that makes its spares
    daemon, _, background = _daemon_of_a_command(http, bucket, "40.456")
    http.delete(f"/exec/{background}")
    makers = _daemon_children(daemon, nested=False)
    assert len(makers) == 1, makers
    try:
        # when the maker dies
        os.kill(makers[0], signal.SIGKILL)
        assert runner.wait_until(lambda: makers[0] not in _children(daemon), timeout=10)

        # then commands still run, each as PID 1 of its own namespace (cloned by the daemon)
        for _ in range(3):
            assert run(http, bucket, "echo $$")["stdout"] == "1\n"
    finally:
        # the next tests get a sandbox with a maker (the agent replaces a dead sandbox)
        os.kill(daemon, signal.SIGKILL)
        assert runner.wait_until(lambda: _exited(daemon), timeout=10)
    assert run(http, bucket, "echo $$")["stdout"] == "1\n"


def test_a_spare_does_little_between_its_request_and_the_exec(tmp_path: Path) -> None:
    # given a prepared spare (a fork of the daemon's module as the sandbox runs it: the host's
    # python3, -I -S), whose exec is caught just before it replaces the process
    script = tmp_path / "spare.py"
    script.write_text(
        "import json, os, resource, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'sandbox')!r})\n"
        "import sandboxd\n"
        "def caught(path, argv, env):\n"
        "    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before\n"
        "    imported = sorted(set(sys.modules) - modules_before)\n"
        "    os.write(1, json.dumps({'faults': faults, 'imported': imported}).encode())\n"
        "    os._exit(0)\n"
        "os.execve = caught\n"
        "if os.fork() == 0:\n"
        "    sandboxd._prepare(False)\n"
        "    null = os.open(os.devnull, os.O_RDWR)\n"
        "    line = json.dumps({'argv': ['true'], 'cwd': '/', 'timeout': 60,\n"
        "                       'env': {'PATH': '/usr/local/bin:/usr/bin:/bin'}})\n"
        "    modules_before = set(sys.modules)\n"
        "    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    sandboxd._exec(json.loads(line), [null, 1, 2])\n"
        "os.wait()\n")

    # when the request comes: decoded, wired and exec'd
    result = json.loads(runner.run(["/usr/bin/python3", "-I", "-S", str(script)],
                                   timeout=30).stdout)

    # then no module is imported on the way (each import reads files: ~0.9 ms for warnings)
    assert result["imported"] == []
    # and few of the daemon's pages are copied (each fault ~2 us: 132-160 when the spare reset
    # its signals and decoded its first JSON there, 48 since)
    assert result["faults"] < 100


def test_the_sandbox_has_its_own_cgroup_with_memory_swap_and_pids_limits(
        agent, http: httpx.Client, bucket: str) -> None:  # type: ignore[no-untyped-def]
    # where the kernel puts a command: the sandbox's own cgroup (cgroup v1: the host's path)
    listed = run(http, bucket, "cat /proc/self/cgroup")["stdout"]
    paths = {line.split(":")[1]: line.split(":")[2] for line in listed.splitlines()}
    instance = agent.env["WELDR_INSTANCE_ID"]
    assert paths["memory"] == f"/weldr-{instance}/weldr-{instance}-exec-{bucket}", listed

    memory = Path("/sys/fs/cgroup/memory") / paths["memory"].lstrip("/")
    limit = int((memory / "memory.limit_in_bytes").read_text())
    assert limit == 512 * 1024 * 1024  # SANDBOX_MEMORY_MB's default
    # memory + swap = memory: no swap use beyond the limit
    assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == limit
    pids = Path("/sys/fs/cgroup/pids") / paths["pids"].lstrip("/")
    assert (pids / "pids.max").read_text().strip() == "512"  # SANDBOX_PIDS's default
