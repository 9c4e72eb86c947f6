"""Pure builders of a command's argv and environment (nothing here runs anything)."""

from __future__ import annotations

from sandbox.bucket_spec import SANDBOX_PATH


def command_argv(command: str | list[str]) -> list[str]:
    """A string runs through `/bin/sh -c` (like a terminal); a list is the argv itself."""
    if isinstance(command, str):
        return ["/bin/sh", "-c", command]
    return list(command)


def command_env(extra: dict[str, str]) -> dict[str, str]:
    """A clean, explicit environment (never the agent's), with the caller's additions."""
    env = {"PATH": SANDBOX_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
           "USER": "sandbox"}
    env.update(extra)
    return env
