"""The in-sandbox command daemon: runs inside a bucket's exec container and forks commands.

Started once per bucket (`runc run -d`, as the sandbox's non-root uid) with the host's read-only
/usr/bin/python3 and the standard library only: it must not import the project. The agent binds
the control socket on the host, where the sandbox has no path to it, and hands it to us as our
stdin: we only listen() (so that the agent's SO_PEERCRED check names this process) and accept.
Per command the agent connects and sends one JSON line with three descriptors (SCM_RIGHTS): the
command's stdin read end and stdout/stderr write ends, so output flows straight to the agent.

Protocol on the connection (newline-delimited JSON):
  agent -> daemon  {"argv": [...], "cwd": "/workspace/x", "env": {...}, "timeout": 60.0}
  daemon -> agent  {"event": "start", "pid": N} | {"event": "error", "detail": "..."}
  agent -> daemon  {"op": "kill"}          (optional; closing the connection also kills)
  daemon -> agent  {"event": "exit", "exit_code": N, "timed_out": bool}

At start the daemon enters a user namespace of its own (mapping only its uid) and installs a
seccomp filter every command inherits (`deny_new_namespaces`: no further user namespace, no
setns, no clone3, no foreign ABI); each command is PID 1 of a new PID and mount namespace, so
killing it kills everything it started. Where user namespaces are refused, commands get their
own session and the process group is killed instead (docs/exec.md, "Design").

The clone, the /proc mount and setsid() are done ahead of time by a "spare" child waiting on a
socketpair, so a request costs a message and an exec. Spares are cloned by the spare maker, a
child forked once at start (as the daemon's children: CLONE_PARENT), never by the daemon itself:
a fork shares the parent's pages with the child, and each page the parent then writes costs it
a copy-on-write fault. Without a maker (it died) the daemon clones each command itself.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import json
import os
import platform
import selectors
import signal
import socket
import struct
import sys
import time

# os.get_exec_path (os.execvpe) imports warnings on its first call: imported here, once, not
# by every spare (~0.9 ms each, docs/exec.md).
import warnings  # noqa: F401

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
CLONE_PARENT = 0x00008000
SYS_CLONE = {"x86_64": 56, "aarch64": 220}
# Audit architecture, and the numbers of clone, unshare, clone3 and setns, per machine.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NAMESPACE_SYSCALLS = {"x86_64": (56, 272, 435, 308), "aarch64": (220, 97, 435, 268)}
X32_SYSCALL_BIT = 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
BPF_LD_W_ABS, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
FDS_PER_REQUEST = 3
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# The next spare is made when a command exits, or this long after a start if none has: not
# right after the start, where the clone would compete for the CPU with the command starting.
SPARE_DELAY = 0.05
# What a spare decodes before its request comes (see _prepare).
WARM_REQUEST = json.dumps({"argv": ["true"], "cwd": "/workspace", "env": {"PATH": "/usr/bin"},
                           "timeout": 60.0})

_libc = ctypes.CDLL(None, use_errno=True)


class Command:
    """One request: its connection, the process that represents it, and its deadline."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""
        self.fds: list[int] = []
        self.pid = 0
        self.nested = False
        self.deadline = float("inf")
        self.timed_out = False

    def send(self, message: dict) -> None:
        try:
            self.conn.sendall(json.dumps(message).encode() + b"\n")
        except OSError:
            pass

    def kill(self) -> None:
        if self.pid <= 0:
            return
        try:
            # PID 1 of its namespace: its death takes every process of the namespace with it.
            # Without namespaces, the process group (a child that called setsid() escapes).
            (os.kill if self.nested else os.killpg)(self.pid, signal.SIGKILL)
        except OSError:
            pass


def enter_user_namespace() -> bool:
    """Become owner of a user namespace that maps only our own uid/gid (no new privilege on
    the host); in it we may create a PID and mount namespace per command. False if refused."""
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER) != 0:
        return False
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    return True


def namespace_filter(machine: str) -> bytes:
    """The classic BPF program of `deny_new_namespaces` (struct sock_filter[]), pure.

    seccomp_data: nr at offset 0, arch at 4, args[0] at 16 (its low half: little-endian).
    """
    clone, unshare, clone3, setns = NAMESPACE_SYSCALLS[machine]
    # (code, jump if true, jump if false, k); jumps name a label or are 0 (next instruction).
    program: list[tuple[int, str | int, str | int, int]] = [
        (BPF_LD_W_ABS, 0, 0, 4),
        (BPF_JEQ, 0, "nosys", AUDIT_ARCH[machine]),
        (BPF_LD_W_ABS, 0, 0, 0),
        (BPF_JGE, "nosys", 0, X32_SYSCALL_BIT),
        (BPF_JEQ, "flags", 0, clone),
        (BPF_JEQ, "flags", 0, unshare),
        (BPF_JEQ, "nosys", 0, clone3),
        (BPF_JEQ, "perm", "allow", setns),
    ]
    labels: dict[str, int] = {}
    tail = {"flags": [(BPF_LD_W_ABS, 0, 0, 16), (BPF_JSET, "perm", "allow", CLONE_NEWUSER)],
            "allow": [(BPF_RET, 0, 0, SECCOMP_RET_ALLOW)],
            "perm": [(BPF_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)],
            "nosys": [(BPF_RET, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]}
    for label, instructions in tail.items():
        labels[label] = len(program)
        program += instructions
    code = b""
    for pc, (op, jt, jf, k) in enumerate(program):
        jumps = [labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
        code += struct.pack("HBBI", op, jumps[0], jumps[1], k)
    return code


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def deny_new_namespaces() -> None:
    """Install `namespace_filter` on this process (inherited by every child); raise if the
    kernel refuses: the daemon must not serve without it."""
    program = namespace_filter(platform.machine())
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    for args in ((PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                 (PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)):
        if _libc.prctl(*[ctypes.c_ulong(a) for a in args]) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"prctl{args[:2]}: {os.strerror(code)}")


def clone_command(*, nested: bool = True, sibling: bool = False) -> int:
    """fork() through a raw clone(2) (single-threaded callers: no at-fork handler is missing);
    nested: the child is PID 1 of a new PID and mount namespace; sibling: it is the caller's
    parent's child (CLONE_PARENT: the spare maker's spares are the daemon's, which reaps them)."""
    number = SYS_CLONE.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, "clone is not wired for this architecture")
    flags = (CLONE_NEWPID | CLONE_NEWNS if nested else 0) | (CLONE_PARENT if sibling else 0)
    pid = _libc.syscall(number, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if pid < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return pid


def _exec(request: dict, fds: list[int]) -> None:
    """In the final child: wire stdio, reset signals, chdir and exec; never returns."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    # Nothing else of the daemon's reaches the command (descriptors received for other
    # requests are not close-on-exec).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    argv = request["argv"]
    try:
        os.chdir(request["cwd"])
        os.execvpe(argv[0], argv, request["env"])
    except FileNotFoundError:
        os.write(2, f"{argv[0]}: command not found\n".encode())
        os._exit(127)
    except OSError as error:
        os.write(2, f"{argv[0]}: {error.strerror}\n".encode())
        os._exit(126)


def _prepare(nested: bool) -> None:
    """In a new child: default signal handling, a /proc of its own (nested) and a new session —
    everything of a command's start that does not depend on the request."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGPIPE, signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if nested:
        # A /proc of the new PID namespace, so that ps and /proc/self agree with getpid().
        _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    os.setsid()
    # A clone shares the daemon's memory until it writes to it: the first write to each page
    # copies it. Decoding a request and searching PATH once here takes those copies before a
    # request waits for them (~0.3 ms of POST /exec, docs/exec.md).
    os.get_exec_path(json.loads(WARM_REQUEST)["env"])


def _child(request: dict, fds: list[int], nested: bool) -> None:
    """Between fork and exec; never returns."""
    try:
        _prepare(nested)
        _exec(request, fds)
    except BaseException as error:  # noqa: BLE001 - a forked child must never return
        _die(error)


def _spare(conn: socket.socket, nested: bool) -> None:
    """A spare child: prepared, then waits for one request (JSON line + 3 fds) and execs it.
    Exits quietly when the daemon goes away (end of file); never returns."""
    try:
        _prepare(nested)
        buffer, fds = b"", []
        while b"\n" not in buffer:
            data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(FDS_PER_REQUEST * 4))
            if not data:
                os._exit(0)
            buffer += data
            fds += _received_fds(ancdata)
        conn.close()
        _exec(json.loads(buffer.split(b"\n", 1)[0]), fds)
    except BaseException as error:  # noqa: BLE001 - a forked child must never return
        _die(error)


def _spare_maker(conn: socket.socket, nested: bool) -> None:
    """The spare maker, forked once at start: for each byte the daemon sends, clone a spare as
    the daemon's child and send back its pid and socket (pid -1: none). Never returns."""
    try:
        while conn.recv(1):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                pid = clone_command(nested=nested, sibling=True)
            except OSError as error:
                print(f"sandboxd: no spare child: {error}", file=sys.stderr, flush=True)
                pid = -1
            if pid == 0:
                conn.close()
                ours.close()
                _spare(theirs, nested)
            theirs.close()
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                       array.array("i", [ours.fileno()]).tobytes())] if pid > 0 else []
            conn.sendmsg([struct.pack("i", pid)], rights)
            ours.close()
        os._exit(0)
    except BaseException as error:  # noqa: BLE001 - a forked child must never return
        _die(error)


def _die(error: BaseException) -> None:
    try:
        os.write(2, f"sandboxd: {error}\n".encode())
    finally:
        os._exit(126)


def _received_fds(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) // 4 * 4]))
    return fds


def listener_from_stdin() -> socket.socket:
    """The control socket the agent bound for us, given as our stdin; stdin becomes /dev/null."""
    listener = socket.socket(fileno=os.dup(0))  # dup: not inherited by commands
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return listener


class Daemon:
    def __init__(self, listener: socket.socket) -> None:
        self.nested = enter_user_namespace()
        deny_new_namespaces()
        # Forked before any signal handling or descriptor of the daemon's is set up.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if (maker := os.fork()) == 0:
            ours.close()
            listener.close()
            _spare_maker(theirs, self.nested)
        theirs.close()
        self.maker: tuple[int, socket.socket] | None = (maker, ours)
        self.asked = False  # a spare asked of the maker and not received yet
        self.waiting: list[tuple[Command, dict, bytes]] = []  # requests waiting for it
        self.selector = selectors.DefaultSelector()
        self.listener = listener
        # Listening here (not in the agent): the peer credentials the agent checks are ours.
        self.listener.listen(128)
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.by_pid: dict[int, Command] = {}
        self.spare: tuple[int, socket.socket] | None = None
        self.spare_due = float("inf")  # when to ask for a spare if no command exits first
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake = wake_r
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._terminate)
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.selector.register(ours, selectors.EVENT_READ, "maker")
        self._make_spare()

    def _terminate(self, *_: object) -> None:
        for command in list(self.by_pid.values()):
            command.kill()
        for child in filter(None, (self.spare, self.maker)):
            os.kill(child[0], signal.SIGKILL)
        sys.exit(0)

    def _clone(self) -> int:
        return clone_command() if self.nested else os.fork()

    def _make_spare(self) -> None:
        """Ask the maker for the next spare (without a maker: none; requests are cloned for)."""
        self.spare_due = float("inf")
        if self.maker is not None and not self.asked:
            try:
                self.maker[1].send(b"s")
                self.asked = True
            except OSError:
                self._spare_made()  # it is gone: reads its end

    def _spare_made(self) -> None:
        """The maker's answer: a spare (pid, socket); nothing: the maker is gone."""
        try:
            data, ancdata, _, _ = self.maker[1].recvmsg(16, socket.CMSG_SPACE(4))
        except OSError:
            data, ancdata = b"", []
        self.asked, fds = False, _received_fds(ancdata)
        if len(data) != 4:
            self.selector.unregister(self.maker[1])
            self.maker[1].close()
            self.maker = None
        elif fds:
            self.spare = (struct.unpack("i", data)[0], socket.socket(fileno=fds[0]))
        waiting, self.waiting = self.waiting, []
        for command, request, line in waiting:
            self._spawn(command, request, line)

    def _hand_to_spare(self, request_line: bytes, fds: list[int]) -> int | None:
        """Give the request to the spare child; its pid, or None when there is no live spare."""
        if self.spare is None:
            return None
        pid, conn = self.spare
        self.spare = None
        try:
            sent = conn.sendmsg([request_line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  array.array("i", fds).tobytes())])
            # Only the rest, if any: once the spare has the whole line it closes its end, and
            # even an empty send then fails (EPIPE) — which would run the command a second time.
            if sent < len(request_line):
                conn.sendall(request_line[sent:])
        except OSError:
            # It died (killed, out of memory): reaped as an unknown pid.
            os.kill(pid, signal.SIGKILL)
            return None
        finally:
            conn.close()
        return pid

    def serve(self) -> None:
        while True:
            now = time.monotonic()
            soonest = min([c.deadline for c in self.by_pid.values()] + [self.spare_due])
            timeout = None if soonest == float("inf") else max(0.0, soonest - now)
            for key, _ in self.selector.select(timeout):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._reap()
                elif key.data == "maker":
                    self._spare_made()
                else:
                    self._readable(key.data)
            self._expire()
            if self.spare is None and time.monotonic() >= self.spare_due:
                self._make_spare()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self.selector.register(conn, selectors.EVENT_READ, Command(conn))

    def _readable(self, command: Command) -> None:
        try:
            data, ancdata, _, _ = command.conn.recvmsg(
                65536, socket.CMSG_SPACE(FDS_PER_REQUEST * 4))
        except OSError:
            data, ancdata = b"", []
        command.fds.extend(_received_fds(ancdata))
        if any(command is waiting for waiting, _, _ in self.waiting):
            return self._drop(command) if not data else None  # gone before its spare came
        if command.pid:
            # After the start: any line is a kill request, and so is a closed connection.
            if not data or b"kill" in data:
                command.kill()
            if not data:
                self.selector.unregister(command.conn)
            return
        if not data:
            self._drop(command)
            return
        command.buffer += data
        if b"\n" not in command.buffer:
            if len(command.buffer) > MAX_REQUEST_BYTES:
                self._fail(command, "request too large")
            return
        line = command.buffer.split(b"\n", 1)[0]
        try:
            request = json.loads(line)
        except ValueError:
            self._fail(command, "request is not JSON")
            return
        if len(command.fds) != FDS_PER_REQUEST:
            self._fail(command, "request must carry stdin, stdout and stderr descriptors")
            return
        self._spawn(command, request, line + b"\n")

    def _spawn(self, command: Command, request: dict, line: bytes) -> None:
        pid = self._hand_to_spare(line, command.fds)
        if pid is None and self.maker is not None:
            # The maker is making one (asked at the last exit): wait for it, do not clone here.
            self.waiting.append((command, request, line))
            self._make_spare()
            return
        if pid is None:
            pid = self._clone()
            if pid == 0:
                _child(request, command.fds, self.nested)
        for fd in command.fds:
            os.close(fd)
        command.fds = []
        command.pid = pid
        command.nested = self.nested
        if request.get("timeout"):
            command.deadline = time.monotonic() + float(request["timeout"])
        self.by_pid[pid] = command
        command.send({"event": "start", "pid": pid})
        if self.spare is None:
            self.spare_due = time.monotonic() + SPARE_DELAY

    def _reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake, 4096):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            command = self.by_pid.pop(pid, None)
            if command is None:
                # A spare that died, or an orphan reparented to us (the container's PID 1).
                if self.spare is not None and self.spare[0] == pid:
                    self.spare[1].close()
                    self.spare = None
                continue
            code = (os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                    else 128 + os.WTERMSIG(status))
            command.send({"event": "exit", "exit_code": code, "timed_out": command.timed_out})
            self._drop(command)
            if self.spare is None:
                self._make_spare()

    def _expire(self) -> None:
        now = time.monotonic()
        for command in list(self.by_pid.values()):
            if command.deadline <= now and not command.timed_out:
                command.timed_out = True
                command.kill()

    def _fail(self, command: Command, detail: str) -> None:
        command.send({"event": "error", "detail": detail})
        self._drop(command)

    def _drop(self, command: Command) -> None:
        self.waiting = [waiting for waiting in self.waiting if waiting[0] is not command]
        for fd in command.fds:
            os.close(fd)
        command.fds = []
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(command.conn)
        command.conn.close()


if __name__ == "__main__":
    Daemon(listener_from_stdin()).serve()
