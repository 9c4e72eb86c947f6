"""Where a running agent's memory is, process by process (bench/bench_footprint.py, issue 17).

The agent's whole tree is the agent process, its children (each mount's JuiceFS watchdog and
server, Litestream) and its sandboxes (the preview warm pool, each bucket's exec daemon), which
runc re-parents away from the agent: those are found by their cgroup, /weldr-<instance>/.
PSS (proportional set size) is the figure that adds up: a page shared by N processes (the
juicefs binary, shared by every watchdog and server) counts 1/N in each.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

TAG = b"WELDR_MOUNT_DAEMON="
# Categories of the whole tree; the S3 server is the benchmark's (production uses Tigris).
NOT_COUNTED = "S3 server (the benchmark's; not counted)"


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup of one process, in KiB (empty when it is gone)."""
    values: dict[str, int] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    except OSError:
        return values
    for line in lines:
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0])
    return values


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def kind(pid: int, agent: int) -> str:
    """What a process of the agent's tree is."""
    if pid == agent:
        return "agent"
    for item in _read(f"/proc/{pid}/environ").split(b"\0"):
        if item.startswith(TAG):
            return item[len(TAG):].split(b":")[0].decode()  # juicefs | litestream
    comm = _read(f"/proc/{pid}/comm").decode().strip()
    if comm == "rclone":
        return NOT_COUNTED
    if b"/weldr-" in _read(f"/proc/{pid}/cgroup"):
        return "sandboxes (warm pool, exec daemons)"
    return f"other ({comm})"


def tree(pid: int) -> list[int]:
    """`pid` and its descendants, through the children of every thread: a Go program (the
    JuiceFS watchdog) forks from any of its threads, not only from its main one."""
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in _read(str(children)).split():
            found += tree(int(child))
    return found


def members(agent: int, instance: str) -> list[int]:
    """The agent's tree and every process in its sandboxes' cgroups."""
    found = set(tree(agent))
    marker = f"/weldr-{instance}/".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and marker in _read(f"/proc/{entry.name}/cgroup"):
            found.add(int(entry.name))
    return sorted(found)


def breakdown(agent: int, instance: str) -> dict[str, tuple[int, float, float]]:
    """Category → (processes, PSS MiB, anonymous PSS MiB)."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for pid in members(agent, instance):
        figures = rollup(pid)
        if not figures:
            continue
        row = sums[kind(pid, agent)]
        row[0] += 1
        row[1] += figures.get("Pss", 0) / 1024
        row[2] += figures.get("Pss_Anon", 0) / 1024
    return {name: (int(n), pss, anon) for name, (n, pss, anon) in sums.items()}


def counted(parts: dict[str, tuple[int, float, float]]) -> float:
    return sum(pss for name, (_n, pss, _a) in parts.items() if name != NOT_COUNTED)


def show(title: str, parts: dict[str, tuple[int, float, float]]) -> None:
    print(f"{title}: PSS by process kind (MiB)")
    for name, (n, pss, anon) in sorted(parts.items(), key=lambda item: -item[1][1]):
        print(f"  {name:<42} {n:3d} processes  PSS {pss:7.1f}  (anonymous {anon:7.1f})")
    print(f"  {'whole tree (counted)':<42}                PSS {counted(parts):7.1f}")


def write_tree(root: Path, count: int) -> None:
    """A small source tree (the same shape as bench_mounts.py's), written as root."""
    for index in range(count):
        folder = root / "work" / f"pkg{index % 50}" / f"mod{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index}.ts").write_bytes(
            f"export const v{index} = {index};\n".encode() * (1 + index % 40))


def used_buffers(env_vol: Path, buckets: list[str]) -> float:
    """The sum of JuiceFS's `juicefs_used_buffer_size_bytes` over the mounts, MiB (its metrics
    port is the last one its log names)."""
    total = 0.0
    for bucket in buckets:
        log = _read(str(env_vol / f"juicefs-{bucket}.log")).decode(errors="replace")
        ports = re.findall(r'metrics listening on "([0-9.:]+)"', log)
        if not ports:
            continue
        try:
            with urllib.request.urlopen(f"http://{ports[-1]}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("juicefs_used_buffer_size_bytes"):
                total += float(line.split()[-1]) / 2**20
    return total


def worst_case(agent: int, instance: str, workspaces: list[Path], env_vol: Path,
               megabytes: int) -> tuple[float, float, float, dict[str, tuple[int, float, float]]]:
    """Every mount written at full speed at once (incompressible data, `megabytes` each, then
    `sync -f`), the whole tree's PSS sampled 4 times a second: (peak PSS, peak of JuiceFS's
    used buffers, seconds until every writer was done, the breakdown at the peak). With
    writeback the uploads wait UPLOAD_DELAY (5 min): nothing leaves for S3 meanwhile, every
    block goes through JuiceFS's buffers into its staging folder."""
    from weldr_agent import runner

    chunk = secrets.token_bytes(1 << 20)

    def write(workspace: Path) -> None:
        with open(workspace / "worst-case.bin", "wb") as handle:
            for _ in range(megabytes):
                handle.write(chunk[:-1] + secrets.token_bytes(1))
        runner.run(["sync", "-f", str(workspace)], timeout=1800)

    writers = [threading.Thread(target=write, args=(w,)) for w in workspaces]
    start = time.monotonic()
    for writer in writers:
        writer.start()
    peak, peak_parts, buffers = 0.0, {}, [0.0]
    while any(writer.is_alive() for writer in writers):
        parts = breakdown(agent, instance)
        if counted(parts) > peak:
            peak, peak_parts = counted(parts), parts
        buffers.append(used_buffers(env_vol, [w.name for w in workspaces]))
        time.sleep(0.25)
    for writer in writers:
        writer.join()
    elapsed = time.monotonic() - start
    for workspace in workspaces:
        (workspace / "worst-case.bin").unlink()
    return peak, max(buffers), elapsed, peak_parts

