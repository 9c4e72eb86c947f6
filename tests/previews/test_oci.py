"""The one OCI builder of preview and exec sandboxes, its seccomp rules, the sandboxes' /etc and
the runtime detector (pure builders, a real /etc build; no containers)."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox import bucket_spec, container, etc, oci, runtime
from sandbox.sandboxd import namespace_filter


def preview_config(tmp_path: Path) -> dict:
    spec = container.Spec(name="weldr-x-preview-site", workspace=tmp_path / "ws",
                        args=["/bin/sh", "/.weldr/run.sh"], netns=Path("/run/netns/weldr-x-1"))
    return container.bundle_config(spec, rootfs=tmp_path / "rootfs")


def exec_config(tmp_path: Path) -> dict:
    return bucket_spec.sandbox_spec(
        name="weldr-x-exec-site", rootfs=tmp_path / "rootfs", workspace=tmp_path / "ws",
        daemon=tmp_path / "sandboxd.py", uid=1000, memory_mb=512, cpus=1.5, pids=256,
        hostname="sandbox", netns=Path("/run/netns/weldr-x-2"))


def rules(config: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for rule in config["linux"]["seccomp"]["syscalls"]:
        for name in rule["names"]:
            found.setdefault(name, []).append(rule)
    return found


def test_preview_and_exec_sandboxes_share_every_limit_and_their_own_cgroup(
        tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    for config in (preview_config(tmp_path), exec_config(tmp_path)):
        linux = config["linux"]
        memory = linux["resources"]["memory"]
        # swap = memory: no swap use beyond the limit
        assert memory["swap"] == memory["limit"] > 0
        assert linux["resources"]["pids"]["limit"] > 0
        assert linux["resources"]["cpu"]["quota"] > 0
        assert linux["cgroupsPath"] == f"/weldr-{settings.INSTANCE_ID}/{config_name(config)}"
        assert {ns["type"] for ns in linux["namespaces"]} == {
            "pid", "mount", "ipc", "uts", "network"}
        assert config["process"]["noNewPrivileges"] is True
        assert all(caps == [] for caps in config["process"]["capabilities"].values())
        mounts = {m["destination"]: m for m in config["mounts"]}
        assert mounts["/etc"]["source"] != "/etc" and "ro" in mounts["/etc"]["options"]
        assert not any(m["source"] == "/etc" for m in config["mounts"])
        assert {"nosuid", "noexec", "nodev"} <= set(mounts["/proc"]["options"])
        assert rules(config)["setns"][0]["errnoRet"] == errno.EPERM
        assert rules(config)["clone3"][0]["errnoRet"] == errno.ENOSYS


def config_name(config: dict) -> str:
    return config["linux"]["cgroupsPath"].rsplit("/", 1)[1]


def test_previews_refuse_new_user_namespaces_in_their_seccomp_profile(tmp_path: Path) -> None:
    found = rules(preview_config(tmp_path))

    for name in ("unshare", "clone"):
        (rule,) = found[name]
        assert rule["errnoRet"] == errno.EPERM
        assert rule["args"] == [{"index": 0, "value": oci.CLONE_NEWUSER,
                                 "valueTwo": oci.CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]
    assert "maskedPaths" in preview_config(tmp_path)["linux"]


def test_the_exec_daemon_gets_its_one_user_namespace_and_filters_the_rest_itself(
        tmp_path: Path) -> None:
    config = exec_config(tmp_path)

    # the runtime's profile leaves clone/unshare to the daemon's own filter ...
    assert "unshare" not in rules(config)
    assert "maskedPaths" not in config["linux"]
    # ... which refuses CLONE_NEWUSER, clone3, setns and foreign ABIs (sandboxd.py)
    program = namespace_filter("x86_64")
    assert len(program) % 8 == 0 and oci.CLONE_NEWUSER.to_bytes(4, "little") in program
    # no control socket directory bound into the sandbox: nothing there can replace it
    assert not any("weldr" in m["destination"] and m["destination"] != bucket_spec.DAEMON_PATH
                   and "opt" not in m["destination"] for m in config["mounts"])
    assert config["process"]["args"][-1] == bucket_spec.DAEMON_PATH


def test_the_sandbox_etc_has_users_certificates_and_no_host_secrets(
        tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "etc"
    etc.build(target, uid=1000)

    assert "sandbox:x:1000:1000:" in (target / "passwd").read_text()
    assert "sandbox:x:1000:" in (target / "group").read_text()
    assert "hosts: files dns" in (target / "nsswitch.conf").read_text()
    assert "sandbox" in (target / "hosts").read_text()
    assert (target / "ssl" / "certs").is_dir()  # the mount point of the host's certificates
    for secret in ("shadow", "gshadow", "ssh", "gitconfig", "npmrc", "machine-id", "sudoers",
                   "postgresql", "ssl/private", "subuid"):
        assert not (target / secret).exists(), secret
    # Debian's alternatives resolve as on the host (awk, which, nodejs)
    awk = target / "alternatives" / "awk"
    assert awk.is_symlink() and awk.readlink() == Path("/etc/alternatives/awk").readlink()
    assert all(path.stat().st_uid == 0 and not path.stat().st_mode & 0o022
               for path in [target, *target.rglob("*")] if not path.is_symlink())


def test_the_runtime_detector_probes_on_a_machine_booted_a_minute_ago(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # given the clock of a machine booted a minute ago (monotonic() counts from boot): "never
    # checked" must not read as "checked less than PROBE_TTL_SECONDS ago"
    now = [60.0]
    monkeypatch.setattr(runtime, "time", SimpleNamespace(monotonic=lambda: now[0]))
    detector = runtime.RuntimeDetector()

    # when / then: a real probe runs and finds the runtime that starts containers here
    assert detector.detect() in ("crun", "runc"), detector.error
    # and the answer is kept for PROBE_TTL_SECONDS, then proven again
    now[0] += runtime.PROBE_TTL_SECONDS + 1
    assert detector.detect() in ("crun", "runc"), detector.error
