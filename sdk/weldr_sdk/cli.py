"""`weldr`: the agent from a terminal (docs/cli.md).

Configuration: flags, else `WELDR_URL` / `WELDR_TOKEN` / `WELDR_API_KEY`, else the config file
(`$WELDR_CONFIG` or `~/.config/weldr/config.toml`: `url = "…"`, `token = "…"`). `--json` prints
the API's JSON (JSON lines for streams) for scripts; progress goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from weldr_sdk.client import Client
from weldr_sdk.config import Config, config_path
from weldr_sdk.errors import APIError, WeldrError

err = Console(stderr=True)
out = Console()


class State:
    def __init__(self, config: Config, as_json: bool) -> None:
        self.config, self.json = config, as_json
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(config=self.config)
        return self._client

    def emit(self, value: Any, human: Callable[[Any], None] | None = None) -> None:
        if self.json or human is None:
            click.echo(json.dumps(value))
        else:
            human(value)

    @contextmanager
    def working(self, message: str) -> Iterator[None]:
        """A spinner on stderr while a long call runs (not with --json)."""
        if self.json:
            yield
        else:
            with err.status(message):
                yield


pass_state = click.make_pass_decorator(State)


class WeldrGroup(click.Group):
    """Turns the SDK's errors into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except APIError as error:
            err.print(f"[red]error[/]: {error.status} {error.code}: {error.detail}",
                      highlight=False)
            sys.exit(1)
        except WeldrError as error:
            err.print(f"[red]error[/]: {error}", highlight=False)
            sys.exit(1)


@click.group(cls=WeldrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", help="The agent's URL [env WELDR_URL; default http://127.0.0.1:8080].")
@click.option("--token", help="Bearer credential: agent token wat_… or a Better Auth "
                              "session/JWT [env WELDR_TOKEN].")
@click.option("--api-key", help="A Better Auth API key (x-api-key) [env WELDR_API_KEY].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help=f"Config file (TOML) [env WELDR_CONFIG; default {config_path()}].")
@click.option("--timeout", type=float, help="Seconds per request [default 60].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (JSON lines for streams).")
@click.version_option(package_name="weldr-agent-sdk")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None, api_key: str | None,
         config_file: str | None, timeout: float | None, as_json: bool) -> None:
    """Drive a Weldr Agent: mounts, files, commands, previews and workflows."""
    config = Config.load(config_file, url=url, token=token, api_key=api_key, timeout=timeout)
    ctx.obj = State(config, as_json)


# -- mounts ---------------------------------------------------------------------------------

@main.command()
@click.argument("bucket")
@click.option("--layout", type=click.Choice(["image", "files"]), help="Layout of a new volume.")
@click.option("--force", is_flag=True, help="Take the bucket over from a machine that is gone.")
@pass_state
def mount(state: State, bucket: str, layout: str | None, force: bool) -> None:
    """Mount BUCKET as a workspace on the agent's machine."""
    with state.working(f"Mounting {bucket}…"):
        result = state.client.mounts.mount(bucket, layout=layout, force=force)
    state.emit(result, lambda m: out.print(f"{m['bucket']} {m['status']} at {m['path']} "
                                           f"({m['layout']}, restored={m['restored']})"))


@main.command()
@click.argument("bucket")
@click.option("--force", is_flag=True, help="Stop the bucket's preview first.")
@pass_state
def unmount(state: State, bucket: str, force: bool) -> None:
    """Flush and unmount BUCKET."""
    with state.working(f"Unmounting {bucket}…"):
        result = state.client.mounts.unmount(bucket, force=force)
    state.emit(result, lambda r: out.print(f"{r['bucket']} {r['status']}"))


@main.command()
@click.argument("bucket")
@pass_state
def sync(state: State, bucket: str) -> None:
    """Make every write to BUCKET so far durable in S3 (zero-loss flush)."""
    with state.working(f"Syncing {bucket} to S3…"):
        result = state.client.mounts.sync(bucket)
    state.emit(result, lambda r: out.print(f"{bucket} synced"))


@main.command()
@pass_state
def mounts(state: State) -> None:
    """List the mounted buckets."""
    def table(rows: list[dict]) -> None:
        grid = Table("bucket", "status", "layout", "path")
        for m in rows:
            grid.add_row(m["bucket"], m["status"], m["layout"], m["path"])
        out.print(grid)
    state.emit(state.client.mounts.list(), table)


# -- files ----------------------------------------------------------------------------------

@main.command("ls")
@click.argument("bucket")
@click.argument("path", default=".")
@pass_state
def ls(state: State, bucket: str, path: str) -> None:
    """List PATH (a directory) of BUCKET's workspace."""
    def table(entries: list[dict]) -> None:
        for e in entries:
            mark = "/" if e["type"] == "dir" else "@" if e["type"] == "symlink" else ""
            out.print(f"{e['size']:>12}  {e['name']}{mark}", highlight=False)
    state.emit(state.client.files.list(bucket, path), table)


@main.command()
@click.argument("bucket")
@click.argument("path")
@pass_state
def cat(state: State, bucket: str, path: str) -> None:
    """Write a file of BUCKET to stdout (streamed)."""
    stream = sys.stdout.buffer
    for chunk in state.client.files.iter_bytes(bucket, path):
        stream.write(chunk)
    stream.flush()


@main.command()
@click.argument("bucket")
@click.argument("path")
@click.argument("source", default="-", type=click.Path(allow_dash=True, dir_okay=False))
@pass_state
def put(state: State, bucket: str, path: str, source: str) -> None:
    """Upload SOURCE (a local file, or - for stdin) to PATH in BUCKET, streamed."""
    if source == "-":
        result = state.client.files.upload(bucket, path, sys.stdin.buffer)
    elif state.json:
        result = state.client.files.upload(bucket, path, source)
    else:
        size = Path(source).stat().st_size
        columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=err) as progress:
            task = progress.add_task(f"put {path}", total=size)
            result = state.client.files.upload(
                bucket, path, source, on_progress=lambda done: progress.update(task,
                                                                               completed=done))
    state.emit(result, lambda r: out.print(f"{r['path']}: {r['size']} bytes"))


@main.command()
@click.argument("bucket")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Delete a directory and its contents.")
@pass_state
def rm(state: State, bucket: str, path: str, recursive: bool) -> None:
    """Delete PATH from BUCKET."""
    state.client.files.delete(bucket, path, recursive=recursive)
    state.emit({"path": path, "deleted": True}, lambda r: None)


# -- commands -------------------------------------------------------------------------------

def parse_env(pairs: tuple[str, ...]) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise click.BadParameter(f"expected NAME=VALUE, got {bad[0]!r}", param_hint="--env")
    return dict(p.split("=", 1) for p in pairs)


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("bucket")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--cwd", help="Working directory, relative to the workspace.")
@click.option("-e", "--env", "env", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--timeout", "seconds", type=float, help="Seconds (default 60, at most 3600).")
@click.option("--background", is_flag=True, help="Start it and print its id.")
@pass_state
def exec_(state: State, bucket: str, command: tuple[str, ...], cwd: str | None,
          env: tuple[str, ...], seconds: float | None, background: bool) -> None:
    """Run COMMAND in BUCKET's sandbox, streaming its output; exits with its exit code.

    One argument is a shell string (`weldr exec b 'ls | wc -l'`); several are an argv
    (`weldr exec b -- ls -la`)."""
    argv: str | list[str] = command[0] if len(command) == 1 else list(command)
    options = {"cwd": cwd, "env": parse_env(env), "timeout": seconds}
    if background:
        handle = state.client.commands.start(bucket, argv, **options)
        state.emit({"id": handle.id, "status": "running"}, lambda r: out.print(r["id"]))
        return
    stream = state.client.commands.stream(bucket, argv, **options)
    for chunk in stream:
        if state.json:
            click.echo(json.dumps({"stream": chunk.stream, "data": chunk.text}))
            continue
        target = sys.stdout.buffer if chunk.stream == "stdout" else sys.stderr.buffer
        target.write(chunk.data)
        target.flush()
    if state.json:
        click.echo(json.dumps({"exit_code": stream.exit_code, "timed_out": stream.timed_out,
                               "duration_ms": stream.duration_ms}))
    # The shell's convention (timeout(1)) for a command stopped at its deadline.
    sys.exit(124 if stream.timed_out else (stream.exit_code or 0))


# -- previews -------------------------------------------------------------------------------

@main.group()
def preview() -> None:
    """Start, stop and follow a bucket's preview app."""


def show_preview(p: dict) -> None:
    out.print(f"{p['bucket']} {p['status']} on port {p['port']}: {p.get('url', '')}",
              highlight=False)


@preview.command("start")
@click.argument("bucket")
@click.option("--port", type=int, help="3000-3019 (default: the first free one).")
@click.option("--command", help="Start command (default: package.json's dev/start script).")
@click.option("-e", "--env", "env", multiple=True, help="NAME=VALUE (repeatable).")
@pass_state
def preview_start(state: State, bucket: str, port: int | None, command: str | None,
                  env: tuple[str, ...]) -> None:
    """Start BUCKET's preview app."""
    with state.working(f"Starting the preview of {bucket}…"):
        result = state.client.previews.start(bucket, port=port, command=command,
                                             env=parse_env(env))
    state.emit(result, show_preview)


@preview.command("stop")
@click.argument("bucket")
@pass_state
def preview_stop(state: State, bucket: str) -> None:
    """Stop BUCKET's preview app."""
    state.emit(state.client.previews.stop(bucket), show_preview)


@preview.command("status")
@click.argument("bucket")
@pass_state
def preview_status(state: State, bucket: str) -> None:
    """BUCKET's preview: status, port, URL."""
    state.emit(state.client.previews.get(bucket), show_preview)


@preview.command("logs")
@click.argument("bucket")
@click.option("-f", "--follow", is_flag=True, help="Follow until the app stops.")
@click.option("--tail", type=int, default=200, show_default=True, help="Lines to show first.")
@pass_state
def preview_logs(state: State, bucket: str, follow: bool, tail: int) -> None:
    """The preview app's log."""
    if not follow:
        click.echo(state.client.previews.logs(bucket, tail=tail), nl=False)
        return
    for line in state.client.previews.follow_logs(bucket, tail=tail):
        click.echo(json.dumps({"line": line}) if state.json else line)


# -- workflows ------------------------------------------------------------------------------

def show_event(state: State, event: Any) -> None:
    if state.json:
        click.echo(json.dumps({"id": event.id, "type": event.type, "data": event.data}))
        return
    detail = event.data.get("text") or event.data.get("error") or event.data.get("step") or ""
    out.print(f"[dim]{event.id:>6}[/] [bold]{event.type}[/] {detail}".rstrip(),
              highlight=False)


@main.command()
@click.argument("project_id")
@click.argument("branch_id")
@click.argument("message")
@click.option("--model", help="anthropic/…, openai/…, google/… (default: the agent's).")
@click.option("-f", "--follow", is_flag=True, help="Follow the run's events to its end.")
@pass_state
def run(state: State, project_id: str, branch_id: str, message: str, model: str | None,
        follow: bool) -> None:
    """Trigger a workflow run on a branch with MESSAGE."""
    handle = state.client.workflows.trigger(project_id, branch_id, message, model=model)
    if not follow:
        state.emit({"run_id": handle.id, "status": "queued"}, lambda r: out.print(r["run_id"]))
        return
    for event in handle.events():
        show_event(state, event)
    final = handle.get()
    if not state.json:
        out.print(f"run {handle.id} {final['status']}")
    sys.exit(0 if final["status"] == "completed" else 1)


@main.command()
@click.argument("project_id")
@click.argument("branch_id")
@click.option("--last-event-id", type=int, help="Replay the events after this id first.")
@pass_state
def events(state: State, project_id: str, branch_id: str, last_event_id: int | None) -> None:
    """Follow a branch's events live (reconnecting across disconnects); Ctrl-C stops."""
    try:
        for event in state.client.workflows.events(project_id, branch_id,
                                                   last_event_id=last_event_id):
            show_event(state, event)
    except KeyboardInterrupt:
        pass


@main.command()
@click.argument("project_id")
@click.argument("branch_id")
@click.argument("version_id")
@pass_state
def revert(state: State, project_id: str, branch_id: str, version_id: str) -> None:
    """Revert a branch to VERSION_ID."""
    state.emit(state.client.workflows.revert(project_id, branch_id, version_id),
               lambda r: out.print(f"reverted to {r.get('commit_hash')}"))


# -- MCP ------------------------------------------------------------------------------------

@main.command()
@pass_state
def mcp(state: State) -> None:
    """Serve the agent's tools to an MCP client over stdio (needs weldr-agent-sdk[mcp])."""
    try:
        from weldr_sdk.stdio import serve
    except ImportError as error:
        raise click.ClickException(f"{error}; install weldr-agent-sdk[mcp]") from None
    serve(state.config)


if __name__ == "__main__":
    main()
