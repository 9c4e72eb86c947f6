"""Where the SDK and the CLI find the agent and the credential: explicit arguments, then the
environment (`WELDR_URL`, `WELDR_TOKEN`, `WELDR_API_KEY`), then a TOML file
(`$WELDR_CONFIG`, else `$XDG_CONFIG_HOME/weldr/config.toml`, else `~/.config/weldr/config.toml`)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Config:
    url: str = DEFAULT_URL
    # `Authorization: Bearer …`: an agent token (wat_…), a Better Auth session token or JWT.
    token: str | None = None
    # `x-api-key: …`: a Better Auth API key.
    api_key: str | None = None
    timeout: float = 60.0
    # Retries of idempotent calls after a connection failure or a 502/503/504.
    retries: int = 2
    backoff: float = 0.5

    @classmethod
    def load(cls, path: str | Path | None = None, **explicit: Any) -> Config:
        """File < environment < explicit (None means "not given")."""
        config = cls()
        file = Path(path) if path else config_path()
        if file.is_file():
            with file.open("rb") as handle:
                values = tomllib.load(handle)
            known = {f.name for f in fields(cls)}
            config = replace(config, **{k: v for k, v in values.items() if k in known})
        env = {"url": os.environ.get("WELDR_URL"), "token": os.environ.get("WELDR_TOKEN"),
               "api_key": os.environ.get("WELDR_API_KEY")}
        config = replace(config, **{k: v for k, v in env.items() if v})
        return replace(config, **{k: v for k, v in explicit.items() if v is not None})

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": "weldr-agent-sdk"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers


def config_path() -> Path:
    if os.environ.get("WELDR_CONFIG"):
        return Path(os.environ["WELDR_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "weldr" / "config.toml"
