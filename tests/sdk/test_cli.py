"""`weldr`, the installed entry point, against the real agent: configuration from the
environment and from a file, files, exec's output and exit code, previews, workflow runs and
events, mount and unmount, errors; and `pip install ./sdk` into a clean virtualenv."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import httpx
from weldr_sdk import Client

from tests.conftest import REPO, AgentProcess
from tests.sdk.conftest import write_script
from weldr_agent import runner

SERVER_JS = ('require("http").createServer((q, s) => s.end("hi from " + process.env.PORT))'
             '.listen(Number(process.env.PORT), process.env.HOST);\n'
             'console.log("listening");\n')


class Weldr:
    """Runs the `weldr` command with an environment holding only what a user's shell would."""

    def __init__(self, binary: Path, env: dict[str, str]) -> None:
        self.binary, self.env = binary, env

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120,
                 env: dict[str, str] | None = None) -> runner.Completed:
        return runner.run([self.binary, *args], env=env or self.env, input=input,
                          timeout=timeout, check=False)

    def json(self, *args: str) -> object:
        done = self("--json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **extra}


def test_the_cli_end_to_end(weldr_bin: Path, agent: AgentProcess, token: str, bucket: str,
                            weldr: Client, scripts: Path, tmp_path: Path, ports_lock: None):
    cli = Weldr(weldr_bin, user_env(tmp_path, WELDR_URL=agent.url, WELDR_TOKEN=token))

    # help everywhere
    for args in ([], ["exec"], ["preview", "start"], ["events"], ["mcp"]):
        shown = cli(*args, "--help")
        assert shown.returncode == 0 and "Usage: weldr" in shown.stdout, args

    # configuration from a file alone (no environment)
    config = tmp_path / "weldr.toml"
    config.write_text(f'url = "{agent.url}"\ntoken = "{token}"\n')
    listed = cli("--json", "--config", str(config), "mounts", env=user_env(tmp_path))
    assert bucket in [m["bucket"] for m in json.loads(listed.stdout)], listed.stderr
    refused = cli("mounts", env=user_env(tmp_path, WELDR_URL=agent.url))
    assert refused.returncode == 1 and "401 not_authenticated" in refused.stderr

    # files: put from a file and from stdin, ls, cat, rm
    local = tmp_path / "hello.txt"
    local.write_text("hello from a file\n")
    assert cli.json("put", bucket, "cli/hello.txt", str(local))["size"] == 18
    assert cli("put", bucket, "cli/stdin.txt", "-", input="piped\n").returncode == 0
    assert sorted(e["name"] for e in cli.json("ls", bucket, "cli")) == ["hello.txt", "stdin.txt"]
    assert cli("cat", bucket, "cli/stdin.txt").stdout == "piped\n"
    missing = cli("cat", bucket, "cli/none.txt")
    assert missing.returncode == 1 and "404 not_found" in missing.stderr

    # exec streams stdout and stderr apart and exits with the command's code
    ran = cli("exec", bucket, "cat cli/hello.txt; echo to-stderr >&2; exit 7")
    assert (ran.returncode, ran.stdout, ran.stderr) == (7, "hello from a file\n", "to-stderr\n")
    argv = cli("exec", "--cwd", "cli", "-e", "WHO=argv", bucket, "--", "sh", "-c",
               "echo $WHO; ls")
    assert (argv.returncode, argv.stdout) == (0, "argv\nhello.txt\nstdin.txt\n"), argv.stderr
    lines = [json.loads(line) for line in cli("--json", "exec", bucket, "echo j").stdout
             .splitlines()]
    assert lines == [{"stream": "stdout", "data": "j\n"},
                     {"exit_code": 0, "timed_out": False,
                      "duration_ms": lines[-1]["duration_ms"]}]
    assert cli("rm", "-r", bucket, "cli").returncode == 0
    assert cli("sync", bucket).returncode == 0

    # a preview: start, its URL answers, logs, stop
    weldr.files.write(bucket, "server.js", SERVER_JS)
    started = cli.json("preview", "start", bucket, "--command", "node server.js")
    assert runner.wait_until(lambda: weldr.previews.get(bucket)["status"] == "running",
                             timeout=60)
    assert httpx.get(f"http://127.0.0.1:{started['port']}/", timeout=10).text == \
        f"hi from {started['port']}"
    assert "listening" in cli("preview", "logs", bucket).stdout
    assert cli.json("preview", "stop", bucket)["status"] == "stopped"

    # a workflow run followed to its end, the branch's events replayed live, a revert
    model = write_script(scripts, "cli-run", [
        {"text": "Plan."},
        {"text": "Writing.", "tool_calls": [
            {"name": "write_file", "arguments": {"path": "cli-run.txt", "content": "v1\n"}}]},
        {"text": "Done."}])
    project = weldr.workflows.create_project("cli")
    branch = weldr.workflows.create_branch(project["id"], name="main", bucket=bucket)
    followed = cli("--json", "run", project["id"], branch["id"], "Go", "--model", model, "-f")
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert events[0]["type"] == "run.queued" and events[-1]["type"] == "run.completed"
    version = events[-1]["data"]["version_id"]
    log = tmp_path / "events.log"
    process = runner.spawn([weldr_bin, "--json", "events", project["id"], branch["id"],
                            "--last-event-id", "0"], env=cli.env, log_path=log)
    try:
        assert runner.wait_until(lambda: "run.completed" in log.read_text(), timeout=30)
        assert process.poll() is None  # still following
    finally:
        runner.stop(process)
    assert [json.loads(line)["id"] for line in log.read_text().splitlines()] == \
        [e["id"] for e in events]
    assert cli.json("revert", project["id"], branch["id"], version)["success"] is True

    # mount and unmount another bucket, with progress on stderr
    other = f"cli-{secrets.token_hex(3)}"
    started_at = time.monotonic()
    assert cli.json("mount", other)["status"] == "mounted"
    assert cli("unmount", other).returncode == 0
    assert time.monotonic() - started_at < 120


def test_pip_installs_the_sdk_into_a_clean_virtualenv(tmp_path: Path):
    venv = tmp_path / "clean"
    runner.run(["python3", "-m", "venv", venv], timeout=120)
    runner.run([venv / "bin" / "pip", "install", "-q", REPO / "sdk"], timeout=600)
    version = runner.run([venv / "bin" / "weldr", "--version"], timeout=60)
    assert version.stdout.strip() == "weldr, version 0.1.0"
    imported = runner.run([venv / "bin" / "python", "-c",
                           "import weldr_sdk; print(weldr_sdk.Client.__name__)"], timeout=60)
    assert imported.stdout.strip() == "Client"
