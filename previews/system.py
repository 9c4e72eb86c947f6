"""Pure builders for previews: names, paths, run.sh, the start command, script argv."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings

from sandbox import container

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
RUN_SCRIPT_INSIDE = "/.weldr/run.sh"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_MAX_VALUE = 32 * 1024
ENV_MAX_TOTAL = 256 * 1024
ENV_MAX_COUNT = 256
# Names the app must not override: the sandbox's contract with it.
ENV_RESERVED = frozenset({"PORT", "HOST"})


def app_dir(bucket: str) -> Path:
    return settings.WELDR_ENV_VOL / "apps" / bucket


def log_path(bucket: str) -> Path:
    return app_dir(bucket) / "app.log"


def run_script_path(bucket: str) -> Path:
    return app_dir(bucket) / "run.sh"


def container_name(bucket: str) -> str:
    return f"{container.container_prefix()}preview-{bucket}"


def app_env(*, port: int, env: Mapping[str, str] | None) -> dict[str, str]:
    """The app's environment on top of the sandbox's clean one: its env, then PORT and HOST."""
    return {**(env or {}), "PORT": str(port), "HOST": "0.0.0.0"}


def env_errors(env: Mapping[str, object]) -> list[str]:
    """What is wrong with a requested environment (empty when it is fine)."""
    errors = []
    if len(env) > ENV_MAX_COUNT:
        errors.append(f"at most {ENV_MAX_COUNT} variables")
    total = 0
    for name, value in env.items():
        if not ENV_NAME.match(name):
            errors.append(f"{name!r} is not a valid variable name")
        elif name in ENV_RESERVED:
            errors.append(f"{name} is set by the agent")
        if not isinstance(value, str):
            errors.append(f"{name}: the value must be a string")
            continue
        if "\0" in value:
            errors.append(f"{name}: the value must not contain NUL")
        if len(value.encode()) > ENV_MAX_VALUE:
            errors.append(f"{name}: the value is longer than {ENV_MAX_VALUE} bytes")
        total += len(name) + len(value.encode())
    if total > ENV_MAX_TOTAL:
        errors.append(f"the environment is larger than {ENV_MAX_TOTAL} bytes")
    return errors


def start_command(package_json: str | None) -> str | None:
    """The app's own start command from package.json: the `dev` script, else `start`."""
    if package_json is None:
        return None
    try:
        scripts = json.loads(package_json).get("scripts") or {}
    except (ValueError, AttributeError):
        return None
    for name in ("dev", "start"):
        if isinstance(scripts, dict) and isinstance(scripts.get(name), str):
            return f"npm run {name}"
    return None


def run_script(command: str) -> str:
    """run.sh: pid 1 of the sandbox. It runs `command` with the container's own shell.

    pid 1 of a pid namespace gets no SIGTERM unless it handles it, and most apps do not: the
    wrapper passes TERM/INT on to every other process of the sandbox, and after a stop waits
    for all of them (when pid 1 exits the kernel kills the rest, which would turn "ignores
    SIGTERM" into "killed at once"). It exits with the command's status.
    """
    return (
        "#!/bin/sh\n"
        "# Written by Weldr Agent: pid 1 of the preview's sandbox; runs its command.\n"
        "stopping=0\n"
        "trap 'stopping=1; kill -TERM -1 2>/dev/null' TERM INT\n"
        f"/bin/sh -c {shlex.quote(command)} &\n"
        "child=$!\n"
        "wait \"$child\"\n"
        "status=$?\n"
        "while kill -0 \"$child\" 2>/dev/null; do\n"
        "  wait \"$child\"\n"
        "  status=$?\n"
        "done\n"
        "while [ \"$stopping\" = 1 ] && kill -0 -1 2>/dev/null; do sleep 0.1; done\n"
        "exit \"$status\"\n"
    )


def start_app_argv(*, binary: str, root: Path, bundle: Path, pid_file: Path,
                   name: str) -> list[str]:
    return [str(SCRIPTS / "start-app.sh"), "--runtime", binary, "--root", str(root),
            "--bundle", str(bundle), "--pid-file", str(pid_file), "--name", name]


def stop_app_argv(*, binary: str, root: Path, name: str, grace: int) -> list[str]:
    return [str(SCRIPTS / "stop-app.sh"), "--runtime", binary, "--root", str(root),
            "--name", name, "--grace", str(grace)]
