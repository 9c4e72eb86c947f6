"""Pure builders of the sandbox and previews, and the scripts run by hand (no containers)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from previews import system
from previews.logs import log_rotate
from sandbox import container, network, oci, warm
from weldr_agent import runner

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def spec(tmp_path: Path, **extra) -> container.Spec:  # type: ignore[no-untyped-def]
    return container.Spec(name="weldr-x-preview-site", workspace=tmp_path / "ws",
                        args=["/bin/sh", "/.weldr/run.sh"], env={"PORT": "3001"},
                        netns=Path("/run/netns/weldr-x-1"), **extra)


def test_bundle_isolates_the_app(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    config = container.bundle_config(spec(tmp_path), rootfs=tmp_path / "rootfs")

    process = config["process"]
    assert process["user"] == {"uid": settings.SANDBOX_UID, "gid": settings.SANDBOX_UID}
    assert process["noNewPrivileges"] is True
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["cwd"] == str(tmp_path / "ws")
    assert config["root"] == {"path": str(tmp_path / "rootfs"), "readonly": True}
    namespaces = {ns["type"]: ns for ns in config["linux"]["namespaces"]}
    assert set(namespaces) == {"pid", "mount", "ipc", "uts", "network"}
    assert namespaces["network"]["path"] == "/run/netns/weldr-x-1"
    resources = config["linux"]["resources"]
    assert resources["memory"]["limit"] == settings.SANDBOX_MEMORY_MB * 1024 * 1024
    assert resources["pids"]["limit"] == settings.SANDBOX_PIDS
    assert resources["cpu"]["quota"] == int(settings.SANDBOX_CPUS * 100_000)
    assert config["linux"]["cgroupsPath"].startswith(f"/weldr-{settings.INSTANCE_ID}/")


def test_bundle_mounts_system_dirs_read_only_and_the_workspace_read_write(
        tmp_path: Path) -> None:
    config = container.bundle_config(spec(tmp_path, binds=[(tmp_path / "run.sh",
                                                          "/.weldr/run.sh", True)]),
                                   rootfs=tmp_path / "rootfs")

    mounts = {m["destination"]: m for m in config["mounts"]}
    for directory in ("/usr", "/etc", "/etc/ssl/certs"):
        assert "ro" in mounts[directory]["options"]
    assert "rw" in mounts[str(tmp_path / "ws")]["options"]
    assert "ro" in mounts["/.weldr/run.sh"]["options"]
    # its own /etc (with its own hosts file), never the host's; the host's CA certificates
    assert mounts["/etc"]["source"] == str(oci.hosts_path().parent) != "/etc"
    assert mounts["/etc/ssl/certs"]["source"] == "/etc/ssl/certs"
    assert order_of(config, "/etc") < order_of(config, "/etc/ssl/certs")
    assert mounts["/tmp"]["type"] == "tmpfs" and "mode=1777" in mounts["/tmp"]["options"]
    order = [m["destination"] for m in config["mounts"]]
    # A workspace under /tmp must be mounted on top of the private /tmp, not hidden by it.
    assert order.index("/tmp") < order.index(str(tmp_path / "ws"))
    # Merged /usr: /bin, /lib are symlinks on the host and stay links in the skeleton.
    for directory in ("/bin", "/lib"):
        assert (directory in mounts) != Path(directory).is_symlink()


def order_of(config: dict, destination: str) -> int:
    return [m["destination"] for m in config["mounts"]].index(destination)


def test_the_environment_is_clean(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", "/etc/ssl/x.pem")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")

    env = container.bundle_config(spec(tmp_path), rootfs=tmp_path)["process"]["env"]

    names = {item.split("=", 1)[0] for item in env}
    assert names == {"PATH", "HOME", "LANG", "TMPDIR", "PORT"}


def test_netns_names_fit_ifnamsiz_and_carry_the_instance(settings) -> None:  # type: ignore[no-untyped-def]
    settings.INSTANCE_ID = "abcdefgh"
    ns = network.netns_for(255)

    assert len(ns.host_if) <= 15 and len(ns.inner_if) <= 15
    assert "abcdefgh" in ns.name and "abcdefgh" in ns.host_if
    assert ns.ip != ns.host_ip and ns.ip.startswith("10.")
    host, inner = network.netns_create_batches(ns)
    assert f"netns add {ns.name}" in host and f"route add default via {ns.host_ip}" in inner


def test_firewall_drops_everything_from_sandboxes_but_replies(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SANDBOX_OUTBOUND = False
    rules = network.firewall_rules()

    chain = network.firewall_chain()
    assert ["-A", chain, "-j", "DROP"] in rules
    assert ["-I", "INPUT", "-i", f"w{settings.INSTANCE_ID}+", "-j", chain] in rules
    assert not any("MASQUERADE" in rule for rule in rules)
    settings.SANDBOX_OUTBOUND = True
    assert any("MASQUERADE" in rule for rule in network.firewall_rules())


def test_warm_bundle_mounts_the_slot_read_only_in_place_of_the_workspaces(
        tmp_path: Path) -> None:
    config = container.bundle_config(spec(tmp_path, workspace_from=tmp_path / "slot" / "ws"),
                                   rootfs=tmp_path / "rootfs")

    mounts = {m["destination"]: m for m in config["mounts"]}
    ws = mounts[str(tmp_path / "ws")]
    assert ws["source"] == str(tmp_path / "slot" / "ws")
    # Read-only (no new workspace can be made there) and a slave: binds on the host reach it.
    assert {"ro", "rslave", "nosuid", "nodev"} <= set(ws["options"])
    assert "rw" not in ws["options"]


@pytest.mark.parametrize(("package_json", "command"), [
    ('{"scripts": {"dev": "vite", "start": "node s.js"}}', "npm run dev"),
    ('{"scripts": {"start": "node s.js"}}', "npm run start"),
    ('{"scripts": {"build": "tsc"}}', None),
    ("not json", None),
    ('["a list"]', None),
    (None, None),
])
def test_start_command_from_package_json(package_json: str | None, command: str | None) -> None:
    assert system.start_command(package_json) == command


def test_run_script_quotes_the_command_for_the_containers_shell(tmp_path: Path) -> None:
    command = "echo 'it''s' $HOME; rm -rf / `x` && y | z"
    script = system.run_script(command)

    # The command reaches /bin/sh -c as one argument, unchanged.
    out = runner.run(["sh", "-n", "-c", script], timeout=10)
    assert out.returncode == 0
    line = next(line for line in script.splitlines() if line.startswith("/bin/sh -c "))
    assert shlex.split(line[len("/bin/sh -c "):-2]) == [command]


def test_run_script_exits_with_the_commands_status(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text(system.run_script("echo out; exit 7"))
    result = runner.run(["sh", script], timeout=10, check=False)
    assert (result.returncode, result.stdout) == (7, "out\n")


def test_env_errors() -> None:
    assert system.env_errors({"GOOD_NAME": "x", "_ok2": ""}) == []
    assert system.env_errors({"9x": "1"}) and system.env_errors({"HOST": "1"})
    assert system.env_errors({"A": "x" * (system.ENV_MAX_VALUE + 1)})


def test_log_rotate_copies_then_truncates(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x" * 5000)
    assert log_rotate(log, max_bytes=4096)
    assert (tmp_path / "app.log.1").stat().st_size == 5000 and log.stat().st_size == 0
    assert not log_rotate(log, max_bytes=4096)


def test_scripts_have_help_and_refuse_bad_arguments(tmp_path: Path) -> None:
    for script in ("start-app.sh", "stop-app.sh"):
        assert "Usage:" in runner.run([SCRIPTS / script, "--help"], timeout=10).stdout
        bad = runner.run([SCRIPTS / script, "--bogus"], timeout=10, check=False)
        assert bad.returncode == 2 and "unknown argument" in bad.stderr
    missing = runner.run([SCRIPTS / "start-app.sh", "--bundle", tmp_path, "--name", "x"],
                         timeout=10, check=False)
    assert missing.returncode == 2 and "config.json missing" in missing.stderr
    evil = runner.run([SCRIPTS / "stop-app.sh", "--name", "x;rm -rf /"], timeout=10,
                      check=False)
    assert evil.returncode == 2 and "invalid container name" in evil.stderr


def test_stop_app_of_a_container_that_is_gone_succeeds(tmp_path: Path) -> None:
    result = runner.run([SCRIPTS / "stop-app.sh", "--name", "weldr-none-preview-x", "--root",
                         tmp_path / "runc"], timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_warm_slot_script_exports_the_env_and_enters_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "my ws"
    workspace.mkdir()
    env = {"PORT": "3004", "TRICKY": "it's a \"value\"\nwith $HOME and `x`", "EMPTY": ""}
    script = tmp_path / "run.sh"
    script.write_text(warm.slot_script(
        workspace=workspace, env=env,
        run_script=system.run_script('pwd; printf "%s|" "$PORT" "$TRICKY" "$EMPTY"')))

    result = runner.run(["sh", script], timeout=10, env={"PATH": "/usr/bin:/bin"})

    assert result.stdout == f"{workspace}\n3004|{env['TRICKY']}||"
    assert script.read_text().startswith("#!/bin/sh\n")
    assert script.read_text().count("#!") == 1
