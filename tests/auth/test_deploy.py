"""Dockerfile and fly.toml: the image installs with CI's script, and the ports/volume agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from django.conf import settings

from weldr_agent import runner

REPO = Path(__file__).resolve().parent.parent.parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_the_image_installs_with_the_script_ci_runs():
    instructions = dockerfile_instructions()
    runs = [args for op, args in instructions if op == "RUN"]
    assert any(re.search(r"(^|&&\s*)scripts/setup\.sh(\s|$)", run) for run in runs), runs
    # CI: .ci/run -> make test -> scripts/setup.sh --test
    assert "make test" in (REPO / ".ci/run").read_text()
    assert "scripts/setup.sh --test" in (REPO / "Makefile").read_text()
    # the files setup.sh reads are in the image before it runs
    copied_before = []
    for op, args in instructions:
        if op == "RUN" and "scripts/setup.sh" in args:
            break
        if op == "COPY":
            copied_before.append(args.split()[0])
    assert {"requirements.lock", "scripts/setup.sh"} <= set(copied_before)


def test_the_image_is_bookworm_python_311_for_amd64_and_serves():
    # Debian bookworm's python3 is 3.11; tests/deploy builds this image and boots it.
    instructions = dockerfile_instructions()
    last = dict(instructions)
    assert last["FROM"] == "--platform=linux/amd64 debian:bookworm-slim"
    assert "manage.py" in last["CMD"] and "serve" in last["CMD"]
    # every script, whichever app adds it, lands in /usr/local/bin (the design's layout)
    assert any("install -m 0755 scripts/*.sh /usr/local/bin/" in args
               for op, args in instructions if op == "RUN")


def test_fly_toml_matches_the_agents_settings():
    fly = tomllib.loads((REPO / "fly.toml").read_text())
    assert fly["http_service"]["internal_port"] == 8080 == int(fly["env"]["PORT"])
    assert fly["http_service"]["checks"][0]["path"] == "/health"
    # /health answers within its own bound, well inside the probe's timeout
    probe_timeout = float(fly["http_service"]["checks"][0]["timeout"].rstrip("s"))
    assert settings.HEALTH_CHECK_TIMEOUT_SECONDS * 2 < probe_timeout
    assert fly["checks"]["alive"]["path"] == "/health/live"
    preview_ports = sorted(service["internal_port"] for service in fly["services"])
    assert preview_ports == list(range(settings.PREVIEW_PORT_MIN, settings.PREVIEW_PORT_MAX + 1))
    assert all(service["ports"][0]["port"] == service["internal_port"]
               for service in fly["services"])
    # the volume is where WELDR_ENV_VOL points, as the design's default
    assert fly["mounts"][0]["destination"] == fly["env"]["WELDR_ENV_VOL"] == "/dev/weldr_env_vol"
    # Fly waits as long as the agent's own shutdown deadline
    assert fly["kill_timeout"] == int(fly["env"]["SHUTDOWN_TIMEOUT_SECONDS"]) == 60
    assert fly["kill_signal"] == "SIGTERM"


def test_setup_script_has_help_and_refuses_unknown_arguments():
    assert "Usage" in runner.run([REPO / "scripts/setup.sh", "--help"], timeout=30).stdout
    result = runner.run([REPO / "scripts/setup.sh", "--bogus"], timeout=30, check=False)
    assert result.returncode == 2 and "unknown argument" in result.stderr
