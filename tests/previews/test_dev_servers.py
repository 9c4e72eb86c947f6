"""Real dev tooling inside a preview: a Vite dev server seen by Chromium, npm install."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from tests.previews.conftest import FIXTURES, http_get, wait_status
from weldr_agent import runner

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

INDEX_HTML = """<!doctype html>
<html><head><title>weldr vite fixture</title></head>
<body><div id="app">not rendered</div><script type="module" src="/main.js"></script></body>
</html>
"""
MAIN_JS = """import { greeting } from "./greeting.js";
document.getElementById("app").textContent = greeting("Vite") + " in " + import.meta.env.MODE;
"""
GREETING_JS = 'export const greeting = (name) => `Rendered by ${name}`;\n'


def chown_tree(path: Path, uid: int) -> None:
    """Files written as root for the app: the sandbox's user owns its workspace."""
    runner.run(["chown", "-R", f"{uid}:{uid}", path], timeout=120)


def chromium_dom(url: str) -> str:
    profile = tempfile.mkdtemp(prefix="weldr-chromium-")
    try:
        return runner.run([
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
            "--dump-dom", url,
        ], timeout=120).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_vite_dev_server_started_from_package_json_renders_in_chromium(
        api: APIClient, previews: None, workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # given: a Vite app whose package.json says how to start it
    shutil.copytree(FIXTURES / "node_modules", workspace / "node_modules", symlinks=True)
    (workspace / "package.json").write_text(
        '{"name": "vite-app", "private": true, "type": "module",\n'
        ' "scripts": {"dev": "vite --host \\"$HOST\\" --port \\"$PORT\\" --strictPort",\n'
        '             "start": "echo wrong script; exit 1"}}\n')
    (workspace / "index.html").write_text(INDEX_HTML)
    (workspace / "main.js").write_text(MAIN_JS)
    (workspace / "greeting.js").write_text(GREETING_JS)
    chown_tree(workspace, settings.SANDBOX_UID)

    # when: started without a command
    response = api.post("/previews/start", {"bucket": workspace.name}, format="json")

    # then: `npm run dev` serves it, and a real browser runs its module graph
    assert response.status_code == 201, response.json()
    assert response.json()["command"] == "npm run dev"
    port = response.json()["port"]
    assert "weldr vite fixture" in http_get(f"http://127.0.0.1:{port}/", timeout=120)[1]
    assert wait_status(workspace.name, {"running"}) == "running"
    dom = chromium_dom(f"http://127.0.0.1:{port}/")
    assert '<div id="app">Rendered by Vite in development</div>' in dom, dom
    assert "VITE" in api.get(f"/previews/{workspace.name}/logs").content.decode().upper()


def test_npm_install_inside_a_preview_writes_the_workspace(
        api: APIClient, previews: None, workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # given: a local package (the sandbox has no route to a registry here)
    package = workspace / "greeting"
    package.mkdir()
    (package / "package.json").write_text('{"name": "greeting", "version": "1.0.0"}')
    (package / "index.js").write_text('module.exports = () => "installed and required";')
    (workspace / "package.json").write_text('{"name": "npm-app", "version": "1.0.0"}')
    (workspace / "use.js").write_text(
        'const text = require("greeting")();\n'
        'require("http").createServer((q, s) => s.end(text))'
        '.listen(Number(process.env.PORT), process.env.HOST);\n')
    chown_tree(workspace, settings.SANDBOX_UID)

    # when
    response = api.post("/previews/start", {
        "bucket": workspace.name,
        "command": "npm install --offline --no-audit --no-fund ./greeting && node use.js",
    }, format="json")

    # then
    assert response.status_code == 201
    port = response.json()["port"]
    log = lambda: api.get(f"/previews/{workspace.name}/logs").content.decode()  # noqa: E731
    try:
        status, text = http_get(f"http://127.0.0.1:{port}/", timeout=120)
    except AssertionError as error:
        raise AssertionError(log()) from error
    assert (status, text) == (200, "installed and required"), log()
    assert (workspace / "node_modules" / "greeting").is_symlink()
    assert (workspace / "package-lock.json").stat().st_uid == 1000
