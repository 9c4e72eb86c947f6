"""Fixtures of the previews tests: real containers, real apps, a lock on host ports 3000-3019."""

from __future__ import annotations

import json
import shutil
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from previews import services
from weldr_agent import runner

FIXTURES = Path(__file__).resolve().parent / "fixtures"

SERVER_JS = textwrap.dedent("""\
    const http = require("http");
    http.createServer((req, res) => {
      res.setHeader("content-type", "text/plain");
      res.end("hello from " + process.env.BUCKET_LABEL + " on " + process.env.PORT + "\\n");
    }).listen(Number(process.env.PORT), process.env.HOST);
""")


@pytest.fixture
def previews(ports_lock: None) -> Iterator[None]:
    """Every preview a test started is stopped and torn down after it, even when it failed; and
    the warm pool it may have started: its filler would go on making sandboxes in this process
    during later tests, with their settings (another WORKSPACE_BASE), for a later warm test."""
    try:
        yield
    finally:
        import time

        from sandbox import warm

        services.previews_stop_all(time.monotonic() + 30)
        warm.warm_pool.shutdown()


def make_workspace(bucket: str) -> Path:
    """A bucket marked mounted with an empty workspace (a plain directory, not JuiceFS).

    Most tests exercise the sandbox, not the mount; test_real_mount.py uses a real one.
    """
    from mounts.models import Mount

    path = settings.WORKSPACE_BASE / bucket
    path.mkdir(parents=True, exist_ok=True)
    Mount.objects.update_or_create(bucket=bucket, defaults={
        "status": Mount.Status.MOUNTED, "cache_size_mb": 100, "buffer_size_mb": 100})
    return path


@pytest.fixture
def workspace(request: pytest.FixtureRequest) -> Iterator[Path]:
    bucket = f"app-{request.node.name.replace('_', '-')[5:40].strip('-')}"
    path = make_workspace(bucket.lower())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_node_app(workspace: Path, label: str = "node") -> None:
    (workspace / "server.js").write_text(SERVER_JS.replace("process.env.BUCKET_LABEL",
                                                           json.dumps(label)))


def http_get(url: str, *, timeout: float = 60.0) -> tuple[int, str]:
    """GET `url`, retrying until it answers (the app may still be starting)."""
    last: Exception | None = None

    def attempt() -> bool:
        nonlocal last, result
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                result = (response.status, response.read().decode())
                return True
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            last = error
            return False

    result: tuple[int, str] = (0, "")
    if not runner.wait_until(attempt, timeout=timeout, interval=0.05):
        raise AssertionError(f"{url} did not answer: {last}")
    return result


def wait_status(bucket: str, statuses: set[str], timeout: float = 60.0) -> str:
    from previews.models import Preview

    def reached() -> bool:
        return Preview.objects.get(bucket=bucket).status in statuses

    runner.wait_until(reached, timeout=timeout, interval=0.05)
    return Preview.objects.get(bucket=bucket).status
