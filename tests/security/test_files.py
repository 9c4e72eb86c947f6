"""Attacks on the agent's file access, planted from inside a real exec sandbox (POST /exec).

The sandbox (uid 1000) controls every name in its workspace: it plants symlinks to host paths,
to /proc, FIFOs, and swaps directories for links while the agent works. The agent (root) then
installs integrations, serves the files API and runs the model's file tools on that workspace;
each test asserts that nothing outside the workspace is read, created or changed, and that no
secret reaches a response or a tool result (what the model and /events subscribers see).
"""

# The exec tests' fixtures are imported by name (no shared conftest); test arguments named like
# them are those fixtures, not redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.exec.conftest import agent, bucket, http, token, workspace  # noqa: F401 (fixtures)
from workflows.providers.base import ToolCall
from workflows.tools import ToolContext, tool_execute

pytestmark = pytest.mark.slow


def sandbox(http: httpx.Client, bucket: str, command: str, **extra: Any) -> dict[str, Any]:
    """Run `command` as the sandbox user inside the bucket's sandbox; it must succeed."""
    result = http.post("/exec", json={"bucket": bucket, "command": command, **extra}).json()
    assert result.get("exit_code") == 0, result
    return result


def tool(workspace: Path, name: str, **arguments: Any) -> Any:  # a ToolResult
    context = ToolContext(workspace=workspace, bucket="b")
    return tool_execute(context, ToolCall(id="c", name=name, arguments=arguments))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host directory the sandbox cannot see (its /tmp is private), holding a secret."""
    directory = tmp_path / f"host-{secrets.token_hex(4)}"
    directory.mkdir()
    (directory / "secret.txt").write_text(f"HOST-SECRET-{secrets.token_hex(8)}\n")
    (directory / "secret.txt").chmod(0o600)
    return directory


def host_state(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
            for p in directory.iterdir()}


@pytest.fixture
def clean(http: httpx.Client, bucket: str, workspace: Path) -> Iterator[Path]:
    """A fresh directory of the workspace for one test, removed (from the sandbox) after."""
    name = f"t-{secrets.token_hex(3)}"
    sandbox(http, bucket, f"mkdir {name}")
    yield workspace / name
    sandbox(http, bucket, f"rm -rf {name}")


def own_environ() -> list[str]:
    """`NAME=value` entries of this process's /proc/self/environ worth looking for."""
    with open("/proc/self/environ", "rb") as handle:
        entries = handle.read().decode(errors="replace").split("\0")
    return [entry for entry in entries if "=" in entry and len(entry.split("=", 1)[1]) >= 8]


# --- integration installs -----------------------------------------------------------------


@pytest.fixture(scope="module")
def branch(http: httpx.Client, bucket: str) -> dict[str, Any]:
    project = http.post("/projects", json={"name": "attacks"})
    assert project.status_code == 201, project.text
    created = http.post(f"/projects/{project.json()['id']}/branches",
                        json={"name": f"b-{secrets.token_hex(3)}", "bucket": bucket})
    assert created.status_code == 201, created.text
    return created.json()


def install(http: httpx.Client, branch: dict[str, Any], *items: dict[str, Any]
            ) -> httpx.Response:
    return http.post("/install-integrations", json={
        "project_id": branch["project_id"], "branch_id": branch["id"],
        "integrations": list(items)}, timeout=120)


@pytest.fixture
def bare(http: httpx.Client, bucket: str) -> Iterator[None]:
    """The integration files absent before and after the test (removed from the sandbox)."""
    names = ".env package.json index.html vite.config.js src db"
    sandbox(http, bucket, f"rm -rf {names}")
    yield
    sandbox(http, bucket, f"rm -rf {names}")


def test_dangling_env_symlink_does_not_become_a_root_write(
        http: httpx.Client, bucket: str, workspace: Path, branch: dict[str, Any], host: Path,
        bare: None) -> None:
    # given .env, a template file and a template directory planted as links to host paths
    target = host / "ld.so.preload"
    sandbox(http, bucket, f"ln -s {target} .env && mkdir -p src/server && "
                          f"ln -s {host / 'db.js'} src/server/db.js && ln -s {host} db")
    before = host_state(host)

    # when the database integration is installed
    reply = install(http, branch, {"key": "database"})

    # then nothing is created or changed on the host; the links are left as they were
    assert not target.exists()
    assert not (host / "db.js").exists() and not (host / "schema.sql").exists()
    assert host_state(host) == before
    assert reply.status_code == 500 and reply.json()["code"] == "integration_failed", reply.text
    assert "symlink" in reply.json()["detail"]
    assert os.readlink(workspace / ".env") == str(target)


def test_symlinked_package_json_is_neither_read_nor_written(
        http: httpx.Client, bucket: str, branch: dict[str, Any], host: Path,
        bare: None) -> None:
    # given package.json linked to a host file that holds a secret
    secret = f"HOST-{secrets.token_hex(8)}"
    (host / "host.json").write_text(f'{{"name": "{secret}"}}')
    sandbox(http, bucket, f"ln -s {host / 'host.json'} package.json")
    before = host_state(host)

    reply = install(http, branch, {"key": "frontend"})

    assert host_state(host) == before
    assert secret not in reply.text
    assert reply.status_code == 500 and "symlink" in reply.json()["detail"], reply.text


def test_an_option_with_a_newline_is_refused_and_env_unchanged(
        http: httpx.Client, bucket: str, workspace: Path, branch: dict[str, Any],
        bare: None) -> None:
    sandbox(http, bucket, "printf 'MINE=1\\n' > .env")

    reply = install(http, branch, {"key": "database",
                                   "options": {"database_url": "postgres://x\nEVIL=1"}})

    assert reply.status_code == 400 and reply.json()["code"] == "invalid_options", reply.text
    assert (workspace / ".env").read_text() == "MINE=1\n"


def test_installed_files_belong_to_the_sandbox_user(
        http: httpx.Client, bucket: str, workspace: Path, branch: dict[str, Any],
        bare: None) -> None:
    reply = install(http, branch, {"key": "frontend"})

    assert reply.status_code == 200, reply.text
    for path in ("index.html", "src", "src/main.jsx", "package.json"):
        assert (workspace / path).stat().st_uid == 1000, path
    sandbox(http, bucket, "echo '// mine' >> src/App.jsx && rm index.html")


# --- the model's file tools ---------------------------------------------------------------


def test_tools_never_read_through_links_to_proc_or_host_files(
        http: httpx.Client, bucket: str, clean: Path, host: Path) -> None:
    # given links to this process's environment, to a host secret, to a host directory
    sandbox(http, bucket, f"cd {clean.name} && ln -s /proc/self/environ environ && "
                          f"ln -s {host / 'secret.txt'} secret.txt && ln -s {host} hostdir && "
                          "ln -s /proc/self proc && echo 'mine' > real.txt && "
                          "ln -s real.txt alias.txt")
    secret = (host / "secret.txt").read_text().strip()
    environ = own_environ()
    base = clean.name
    calls = [("read_file", {"path": f"{base}/environ"}),
             ("read_file", {"path": f"{base}/secret.txt"}),
             ("read_file", {"path": f"{base}/alias.txt"}),
             ("read_file", {"path": f"{base}/hostdir/secret.txt"}),
             ("read_file", {"path": f"{base}/proc/environ"}),
             ("grep", {"pattern": "=|SECRET"}),
             ("grep", {"pattern": "=|SECRET", "path": base}),
             ("grep", {"pattern": "=|SECRET", "path": f"{base}/environ"}),
             ("grep", {"pattern": "=|SECRET", "path": f"{base}/hostdir"}),
             ("find_files", {"pattern": "*"}),
             ("list_directory", {"path": base}),
             ("list_directory", {"path": f"{base}/hostdir"}),
             ("list_directory", {"path": f"{base}/proc"}),
             ("edit_file", {"path": f"{base}/secret.txt", "search": "HOST", "replace": "x"})]

    results = {(name, str(args)): tool(clean.parent, name, **args) for name, args in calls}

    for key, result in results.items():
        assert secret not in result.content, key
        leaked = [entry.split("=", 1)[0] for entry in environ if entry in result.content]
        assert not leaked, (key, leaked)
    # links are reported as links, and reading through one is refused
    assert f"{base}/environ@" in results[("find_files", str({"pattern": "*"}))].content
    listing = results[("list_directory", str({"path": base}))].content.splitlines()
    assert sorted(listing) == ["alias.txt@", "environ@", "hostdir@", "proc@", "real.txt",
                               "secret.txt@"]
    assert results[("read_file", str({"path": f"{base}/alias.txt"}))].is_error
    assert (host / "secret.txt").read_text().strip() == secret


def test_write_file_onto_a_symlink_is_refused(http: httpx.Client, bucket: str, clean: Path,
                                             host: Path) -> None:
    # given links to a file inside the workspace, to a host file and to nothing on the host
    sandbox(http, bucket, f"cd {clean.name} && echo mine > real.txt && "
                          f"ln -s real.txt alias.txt && ln -s {host / 'secret.txt'} out.txt && "
                          f"ln -s {host / 'new.txt'} dangling.txt")
    before = host_state(host)

    results = [tool(clean.parent, name, path=f"{clean.name}/{link}", **extra)
               for link in ("alias.txt", "out.txt", "dangling.txt")
               for name, extra in (("write_file", {"content": "pwned"}),
                                   ("edit_file", {"search": "mine", "replace": "pwned"}))]

    assert all(result.is_error for result in results), [r.content for r in results]
    assert (clean / "real.txt").read_text() == "mine\n"
    assert host_state(host) == before
    assert os.path.islink(clean / "alias.txt")


SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.mkdir("d"); os.symlink(sys.argv[1], "link")
end = time.time() + float(sys.argv[2])
while time.time() < end:
    # RENAME_EXCHANGE: `d` is always there, a directory one instant, a link to the host the next
    libc.renameat2(-100, b"d", -100, b"link", 2)
"""


def test_a_parent_swapped_for_a_symlink_mid_write_never_leads_outside(
        http: httpx.Client, bucket: str, clean: Path, host: Path) -> None:
    # given a sandbox command swapping `d` between a directory and a link to a host directory
    (clean / "swap.py").write_text(SWAPPER)
    started = http.post("/exec", json={"bucket": bucket, "cwd": clean.name, "background": True,
                                       "command": f"python3 swap.py {host} 30", "timeout": 60})
    assert started.status_code == 202, started.text
    try:
        # (the swap really happens: `d` is seen as a link at least once)
        assert _until(lambda: (clean / "d").is_symlink())
        before = host_state(host)

        # when the agent writes into d/ many times, through the tools and the files API
        for n in range(150):
            tool(clean.parent, "write_file", path=f"{clean.name}/d/f{n}.txt", content="x")
            tool(clean.parent, "edit_file", path=f"{clean.name}/d/f{n}.txt", search="x",
                 replace="y")
            http.put(f"/files/{bucket}/content", params={"path": f"{clean.name}/d/g{n}.txt"},
                     content=b"x")
    finally:
        http.delete(f"/exec/{started.json()['id']}")

    # then every write landed inside the workspace, none in the host directory
    assert host_state(host) == before
    landed = [p.name for p in (clean / "d").iterdir()] if (clean / "d").is_dir() else []
    landed += [p.name for p in (clean / "link").iterdir()] if (clean / "link").is_dir() and \
        not (clean / "link").is_symlink() else []
    assert landed, "the swap never let a write through: the test proves nothing"


def _until(condition: Any, timeout: float = 20) -> bool:
    from weldr_agent import runner

    return runner.wait_until(condition, timeout=timeout)


def test_a_fifo_where_the_agent_reads_does_not_hang_it(
        http: httpx.Client, bucket: str, clean: Path) -> None:
    # given FIFOs planted where the tools and the files API read
    sandbox(http, bucket, f"cd {clean.name} && mkfifo pipe && mkdir src && mkfifo src/app.js "
                          "&& echo 'const x = 1' > src/real.js")
    base = clean.name
    calls = [("read_file", {"path": f"{base}/pipe"}), ("grep", {"pattern": "x", "path": base}),
             ("grep", {"pattern": "x", "path": f"{base}/pipe"}),
             ("edit_file", {"path": f"{base}/pipe", "search": "a", "replace": "b"}),
             ("find_files", {"pattern": f"{base}/*"}), ("list_directory", {"path": base})]
    results: dict[str, Any] = {}

    def run() -> None:
        for name, args in calls:
            results[f"{name} {args}"] = tool(clean.parent, name, **args)
        results["GET"] = http.get(f"/files/{bucket}/content",
                                  params={"path": f"{base}/pipe"}, timeout=30)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=30)
    try:
        assert not worker.is_alive(), f"hung after {list(results)}"
    finally:
        for fifo in (clean / "pipe", clean / "src/app.js"):
            _release(fifo)
    assert results["GET"].status_code == 400 and results["GET"].json()["code"] == "not_a_file"
    assert results[f"grep {calls[1][1]}"].content == f"{base}/src/real.js:1: const x = 1"
    assert results[f"read_file {calls[0][1]}"].is_error


def _release(fifo: Path) -> None:
    """Unblock a reader stuck on `fifo` (the old code's hang), so the test process can exit."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


# --- the files API ------------------------------------------------------------------------


def test_files_api_never_goes_through_planted_links(
        http: httpx.Client, bucket: str, clean: Path, host: Path) -> None:
    sandbox(http, bucket, f"cd {clean.name} && echo mine > real.txt && ln -s real.txt alias.txt"
                          f" && ln -s {host} hostdir && ln -s {host / 'secret.txt'} secret.txt"
                          " && ln -s /proc/self/environ environ")
    secret = (host / "secret.txt").read_text().strip()
    before = host_state(host)
    base = clean.name

    reads = [http.get(f"/files/{bucket}/content", params={"path": f"{base}/{name}"})
             for name in ("alias.txt", "secret.txt", "environ", "hostdir/secret.txt")]
    writes = [http.put(f"/files/{bucket}/content", params={"path": f"{base}/{name}"},
                       content=b"pwned")
              for name in ("alias.txt", "secret.txt", "hostdir/new.txt")]
    listing = http.get(f"/files/{bucket}", params={"path": f"{base}/hostdir"})

    for response in [*reads, *writes, listing]:
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "is_symlink"
        assert secret not in response.text and "PATH=" not in response.text
    assert (clean / "real.txt").read_text() == "mine\n"
    assert host_state(host) == before


# --- previews -----------------------------------------------------------------------------


def test_a_fifo_package_json_does_not_hang_a_preview_start(
        http: httpx.Client, bucket: str, workspace: Path, bare: None) -> None:
    # given package.json planted as a FIFO (the preview reads it to find the start command)
    sandbox(http, bucket, "mkfifo package.json")
    try:
        # when a preview is started without a command
        reply = http.post("/previews/start", json={"bucket": bucket}, timeout=20)
    except httpx.ReadTimeout:
        reply = None
    finally:
        _release(workspace / "package.json")

    # then it answers at once: there is no start command to be read from a FIFO
    assert reply is not None, "the preview start hung reading a FIFO"
    assert (reply.status_code, reply.json()["code"]) == (400, "no_start_command"), reply.text


def test_a_symlinked_package_json_decides_nothing_for_a_preview(
        http: httpx.Client, bucket: str, host: Path, bare: None) -> None:
    # given package.json linked to a root-only host file that has a start script
    (host / "package.json").write_text('{"scripts": {"dev": "vite"}}')
    (host / "package.json").chmod(0o600)
    sandbox(http, bucket, f"ln -s {host / 'package.json'} package.json")

    reply = http.post("/previews/start", json={"bucket": bucket}, timeout=60)

    # then the host file's content is not read: no start command
    assert (reply.status_code, reply.json()["code"]) == (400, "no_start_command"), reply.text
