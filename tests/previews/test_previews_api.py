"""The previews API against real containers: start, serve, stop, logs, bad input, ports."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from previews.models import PortLease, Preview
from tests.previews.conftest import http_get, make_workspace, wait_status, write_node_app

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)


def test_node_app_is_served_on_its_port_and_stopped(api: APIClient, previews: None,
                                                    workspace: Path) -> None:
    # given
    write_node_app(workspace, label="site")
    bucket = workspace.name

    # when
    response = api.post("/previews/start", {"bucket": bucket, "command": "node server.js"},
                        format="json")

    # then
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] in {"starting", "running"}
    port = body["port"]
    assert 3000 <= port <= 3019
    assert body["url"].endswith(f":{port}/")
    status, text = http_get(f"http://127.0.0.1:{port}/")
    assert (status, text) == (200, f"hello from site on {port}\n")
    assert wait_status(bucket, {"running"}) == "running"
    assert api.get(f"/previews/{bucket}").json()["status"] == "running"
    assert [p["bucket"] for p in api.get("/previews").json()["previews"]] == [bucket]

    stopped = api.post("/previews/stop", {"bucket": bucket}, format="json")
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped"
    assert not PortLease.objects.exists()
    with pytest.raises(AssertionError):
        http_get(f"http://127.0.0.1:{port}/", timeout=0.5)
    # Idempotent.
    again = api.post("/previews/stop", {"bucket": bucket}, format="json")
    assert again.status_code == 200 and again.json()["status"] == "stopped"


def test_run_sh_and_app_log_are_written_under_the_env_volume(api: APIClient, previews: None,
                                                              workspace: Path,
                                                              settings) -> None:  # type: ignore[no-untyped-def]
    write_node_app(workspace)
    bucket = workspace.name
    command = "echo started-$((40+2)) && exec node server.js"

    port = api.post("/previews/start", {"bucket": bucket, "command": command},
                    format="json").json()["port"]
    http_get(f"http://127.0.0.1:{port}/")

    app_dir = settings.WELDR_ENV_VOL / "apps" / bucket
    assert "exec node server.js" in (app_dir / "run.sh").read_text()
    assert "started-42" in (app_dir / "app.log").read_text()
    logs = api.get(f"/previews/{bucket}/logs?tail=5")
    assert logs.status_code == 200
    assert logs["Content-Type"].startswith("text/plain")
    assert "started-42" in logs.content.decode()


def test_shell_metacharacters_run_in_the_containers_shell(api: APIClient, previews: None,
                                                          workspace: Path) -> None:
    write_node_app(workspace)
    command = "id -u > uid.txt; echo $HOSTNAME > host.txt; exec node server.js"

    port = api.post("/previews/start", {"bucket": workspace.name, "command": command},
                    format="json").json()["port"]
    http_get(f"http://127.0.0.1:{port}/")

    # Run by the sandbox's user in the sandbox (the host's shell would write as root).
    assert (workspace / "uid.txt").read_text().strip() == "1000"
    assert (workspace / "uid.txt").stat().st_uid == 1000


def test_app_gets_port_and_host_and_its_env(api: APIClient, previews: None,
                                            workspace: Path) -> None:
    write_node_app(workspace)
    command = 'echo "$PORT $HOST $GREETING ${NODE_EXTRA_CA_CERTS:-none}" > env.txt; ' \
              "exec node server.js"

    port = api.post("/previews/start", {"bucket": workspace.name, "command": command,
                                        "env": {"GREETING": "hi there"}},
                    format="json").json()["port"]
    http_get(f"http://127.0.0.1:{port}/")

    assert (workspace / "env.txt").read_text() == f"{port} 0.0.0.0 hi there none\n"


def test_start_command_comes_from_package_json(api: APIClient, previews: None,
                                               workspace: Path) -> None:
    write_node_app(workspace, label="from-package-json")
    (workspace / "package.json").write_text(
        '{"name": "x", "scripts": {"start": "node server.js"}}')

    response = api.post("/previews/start", {"bucket": workspace.name}, format="json")

    assert response.status_code == 201
    assert response.json()["command"] == "npm run start"
    _, text = http_get(f"http://127.0.0.1:{response.json()['port']}/")
    assert text.startswith("hello from from-package-json")


def test_app_that_crashes_on_start_is_failed_with_its_log(api: APIClient, previews: None,
                                                          workspace: Path) -> None:
    (workspace / "crash.js").write_text('console.error("boom: missing config"); process.exit(3)')

    response = api.post("/previews/start", {"bucket": workspace.name,
                                            "command": "node crash.js"}, format="json")

    assert response.status_code == 201
    assert wait_status(workspace.name, {"failed", "exited"}) == "failed"
    preview = api.get(f"/previews/{workspace.name}").json()
    assert preview["exit_code"] == 3
    assert "boom: missing config" in api.get(f"/previews/{workspace.name}/logs").content.decode()
    assert not PortLease.objects.exists()


def test_app_that_ignores_sigterm_is_killed_after_the_grace_period(
        api: APIClient, previews: None, workspace: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PREVIEW_STOP_GRACE_SECONDS = 1
    (workspace / "stubborn.js").write_text(
        'process.on("SIGTERM", () => console.log("ignoring SIGTERM"));\n'
        'require("http").createServer((q, s) => s.end("ok"))'
        '.listen(Number(process.env.PORT), process.env.HOST);\n')
    started = api.post("/previews/start", {"bucket": workspace.name,
                                           "command": "node stubborn.js"}, format="json")
    port = started.json()["port"]
    http_get(f"http://127.0.0.1:{port}/")

    stopped = api.post("/previews/stop", {"bucket": workspace.name}, format="json").json()

    assert stopped["status"] == "stopped"
    assert stopped["exit_code"] == 137
    assert "ignoring SIGTERM" in api.get(f"/previews/{workspace.name}/logs").content.decode()


def test_app_that_handles_sigterm_exits_cleanly_on_stop(api: APIClient, previews: None,
                                                        workspace: Path) -> None:
    write_node_app(workspace)
    port = api.post("/previews/start", {"bucket": workspace.name,
                                        "command": "node server.js"}, format="json").json()["port"]
    http_get(f"http://127.0.0.1:{port}/")

    stopped = api.post("/previews/stop", {"bucket": workspace.name}, format="json").json()

    # node's default SIGTERM action: killed by the signal (128 + 15), not SIGKILL (137).
    assert stopped["exit_code"] == 143


# ---------------------------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------------------------

def test_twenty_concurrent_starts_get_twenty_ports_and_the_21st_gets_503(
        agent_token: str, previews: None) -> None:
    buckets = [f"many-{n:02d}" for n in range(21)]
    for bucket in buckets:
        make_workspace(bucket)
    results: dict[str, tuple[int, dict]] = {}
    barrier = threading.Barrier(len(buckets))

    def start(bucket: str) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {agent_token}")
        barrier.wait()
        response = client.post("/previews/start", {"bucket": bucket, "command": "sleep 600"},
                               format="json")
        results[bucket] = (response.status_code, response.json())

    threads = [threading.Thread(target=start, args=(b,)) for b in buckets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    statuses = sorted(code for code, _ in results.values())
    assert statuses == [201] * 20 + [503], results
    ports = [body["port"] for code, body in results.values() if code == 201]
    assert sorted(ports) == list(range(3000, 3020))
    refused = [body for code, body in results.values() if code == 503]
    assert refused[0]["code"] == "no_free_port"
    assert PortLease.objects.count() == 20


def test_a_requested_port_is_honoured_and_conflicts_are_409(api: APIClient, previews: None,
                                                            workspace: Path) -> None:
    write_node_app(workspace)
    other = make_workspace("other-app")
    write_node_app(other)

    first = api.post("/previews/start", {"bucket": workspace.name, "port": 3007,
                                         "command": "node server.js"}, format="json")
    taken = api.post("/previews/start", {"bucket": other.name, "port": 3007,
                                         "command": "node server.js"}, format="json")
    again = api.post("/previews/start", {"bucket": workspace.name,
                                         "command": "node server.js"}, format="json")

    assert first.status_code == 201 and first.json()["port"] == 3007
    assert (taken.status_code, taken.json()["code"]) == (409, "port_in_use")
    assert (again.status_code, again.json()["code"]) == (409, "preview_exists")
    assert not Preview.objects.filter(bucket=other.name).exists()
    http_get("http://127.0.0.1:3007/")


# ---------------------------------------------------------------------------------------------
# Bad input: 4xx in the API's error shape, nothing started, nothing leaked
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", [2999, 3020, "3000", "abc", -1, 3000.5, True])
def test_ports_outside_the_range_are_refused(api: APIClient, workspace: Path,
                                             port: object) -> None:
    response = api.post("/previews/start", {"bucket": workspace.name, "port": port,
                                            "command": "true"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_port"
    assert not Preview.objects.exists() and not PortLease.objects.exists()


def test_a_bucket_that_is_not_mounted_is_409(api: APIClient) -> None:
    response = api.post("/previews/start", {"bucket": "not-mounted-here", "command": "true"},
                        format="json")

    assert (response.status_code, response.json()["code"]) == (409, "not_mounted")
    assert not Preview.objects.exists() and not PortLease.objects.exists()


@pytest.mark.parametrize("env", [
    {"1BAD": "x"}, {"BAD-NAME": "x"}, {"A B": "x"}, {"": "x"}, {"PORT": "1"},
    {"BIG": "x" * 40_000}, {"NUL": "a\u0000b"}, {"NUM": 5},
    {f"V{n}": "x" * 30_000 for n in range(10)},
])
def test_invalid_env_is_refused(api: APIClient, workspace: Path, env: dict) -> None:
    response = api.post("/previews/start", {"bucket": workspace.name, "command": "true",
                                            "env": env}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "env" in response.json()["errors"]
    assert not Preview.objects.exists() and not PortLease.objects.exists()


def test_unknown_previews_are_404(api: APIClient) -> None:
    assert api.get("/previews/nothing-here").json()["code"] == "no_preview"
    stop = api.post("/previews/stop", {"bucket": "nothing-here"}, format="json")
    assert (stop.status_code, stop.json()["code"]) == (404, "no_preview")
    assert api.get("/previews/nothing-here/logs").status_code == 404


def test_no_command_and_no_package_json_is_400(api: APIClient, workspace: Path) -> None:
    response = api.post("/previews/start", {"bucket": workspace.name}, format="json")

    assert (response.status_code, response.json()["code"]) == (400, "no_start_command")
    assert not PortLease.objects.exists()


def test_previews_need_authentication(anon: APIClient) -> None:
    assert anon.get("/previews").status_code == 401
    assert anon.post("/previews/start", {"bucket": "x-y-z"}, format="json").status_code == 401
