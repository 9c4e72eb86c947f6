"""Pure builders and validators: checked without running anything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from mounts import system
from mounts.errors import InvalidBucket
from mounts.validators import validate_bucket_name

BAD_NAMES = [
    "a/b", "../etc", "..", "a..b", "with space", "semi;colon", "pipe|x", "dollar$x", "back`tick",
    "amp&x", "quote'x", "star*", "UpperCase", "ab", "a" * 64, "192.168.1.10", "-leading",
    "trailing-", ".dot", "dot.", "under_score", "", "new\nline", "tab\tx", "a.-b", "a-.b",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_bucket_names_are_refused(name):
    with pytest.raises(InvalidBucket):
        validate_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "my-bucket", "my.bucket.01", "a" * 63, "1-2-3",
                                  "192.168.1"])
def test_good_bucket_names_pass(name):
    assert validate_bucket_name(name) == name


def test_paths_follow_the_design_layout(settings, tmp_path):
    settings.WELDR_ENV_VOL = tmp_path / "vol"
    settings.WORKSPACE_BASE = tmp_path / "ws"
    p = system.paths("proj-1")
    vol = tmp_path / "vol"
    assert p.meta_db == vol / "meta" / "proj-1.db"
    assert p.cache_dir == vol / "cache" / "proj-1"
    assert p.juicefs_log == vol / "juicefs-proj-1.log"
    assert p.litestream_config == vol / "litestream-proj-1.yml"
    assert p.litestream_log == vol / "litestream-proj-1.log"
    assert p.mount_point == tmp_path / "ws" / "proj-1"
    assert p.meta_url.startswith(f"sqlite3://{vol}/meta/proj-1.db?")
    assert "_journal=WAL" in p.meta_url


def test_budget_reserves_then_splits_the_cache_and_clamps_the_buffer(settings):
    settings.CACHE_SIZE_MB = None
    settings.BUFFER_SIZE_MB = None
    settings.CACHE_TOTAL_MB, settings.CACHE_RESERVED_META_MB = 4096, 1024
    settings.CACHE_RESERVED_OVERHEAD_MB = 500
    settings.BUFFER_POOL_MB, settings.BUFFER_MIN_MB, settings.BUFFER_MAX_MB = 400, 100, 256
    assert system.budget(1) == system.Budget(cache_size_mb=2572, buffer_size_mb=256)
    assert system.budget(2) == system.Budget(cache_size_mb=1286, buffer_size_mb=200)
    assert system.budget(5) == system.Budget(cache_size_mb=514, buffer_size_mb=100)


def test_budget_overrides_win(settings):
    settings.CACHE_SIZE_MB, settings.BUFFER_SIZE_MB = 51200, 4096
    assert system.budget(5) == system.Budget(cache_size_mb=51200, buffer_size_mb=4096)


def test_free_space_ratio_keeps_the_metadata_reserve_free(settings):
    settings.FREE_SPACE_RATIO = 0.01
    settings.CACHE_RESERVED_META_MB = 1024
    gib = 1024**3
    # 20 GB volume: staging stops while 1 GB (ratio/2) is still free
    assert system.free_space_ratio(20 * gib) == 0.1
    # a huge volume keeps the configured floor
    assert system.free_space_ratio(10_000 * gib) == 0.01
    # a tiny volume is capped: the cache must still be usable
    assert system.free_space_ratio(1 * gib) == 0.5


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mount_argv_has_the_design_options_and_honours_overrides(settings, tmp_path):
    settings.WELDR_ENV_VOL, settings.WORKSPACE_BASE = tmp_path / "v", tmp_path / "w"
    settings.ATTR_CACHE_TTL, settings.ENTRY_CACHE_TTL = 3, 4
    settings.DIR_ENTRY_CACHE_TTL, settings.OPEN_CACHE_TTL = 5, 10
    settings.MAX_READAHEAD_MB, settings.PREFETCH, settings.VERIFY_CACHE = 64, 2, "sha256"
    settings.WRITEBACK_ENABLED, settings.UPLOAD_DELAY, settings.MAX_UPLOADS = True, "1m", 20
    settings.FS_MOUNT_OPTIONS = "--enable-xattr --max-deletes 2"
    p = system.paths("b-1")
    argv = system.juicefs_mount_argv("juicefs", p, system.Budget(500, 128), free_ratio=0.2)
    assert argv[:4] == ["juicefs", "mount", p.meta_url, str(p.mount_point)]
    expected = {
        "--cache-size": "500", "--buffer-size": "128", "--free-space-ratio": "0.2",
        "--attr-cache": "3", "--entry-cache": "4", "--dir-entry-cache": "5",
        "--open-cache": "10", "--max-readahead": "64", "--prefetch": "2",
        "--verify-cache-checksum": "full", "--upload-delay": "1m", "--max-uploads": "20",
        "--cache-dir": str(p.cache_dir), "--backup-meta": "0",
    }
    for flag, value in expected.items():
        assert _flag(argv, flag) == value, flag
    assert "--writeback" in argv and "--no-usage-report" in argv
    assert argv[-5:] == ["--enable-xattr", "--max-deletes", "2", "-o", "nosuid,nodev"]
    # secrets never travel in argv
    assert settings.S3_SECRET_ACCESS_KEY not in " ".join(argv)


def test_an_operators_fuse_options_never_drop_nosuid_nodev(settings):
    # juicefs keeps only the last -o: ours and the operator's are joined into one
    settings.FS_MOUNT_OPTIONS = "-o allow_other --enable-xattr -o=ro -open-cache 5"
    argv = system.juicefs_mount_argv("juicefs", system.paths("b-1"), system.Budget(1, 1),
                                     free_ratio=0.1)
    assert argv.count("-o") == 1 and not any(item.startswith("-o=") for item in argv)
    assert _flag(argv, "-o") == "nosuid,nodev,allow_other,ro"
    assert "--enable-xattr" in argv and argv[-4:-2] == ["-open-cache", "5"]


def test_writeback_off_drops_writeback_and_upload_delay(settings):
    settings.WRITEBACK_ENABLED = False
    argv = system.juicefs_mount_argv("juicefs", system.paths("b-1"), system.Budget(1, 1),
                                     free_ratio=0.1)
    assert "--writeback" not in argv and "--upload-delay" not in argv


def test_format_argv_uses_trash_days_and_never_updates(settings):
    settings.TRASH_DAYS = 7
    argv = system.juicefs_format_argv("juicefs", system.paths("b-1"))
    assert _flag(argv, "--trash-days") == "7"
    assert "--no-update" in argv and "--enable-acl" not in argv
    assert argv[-1] == system.VOLUME_NAME
    assert _flag(argv, "--bucket") == f"{settings.S3_ENDPOINT}/b-1"


def test_tool_envs_carry_keys_but_no_ca_bundle(settings, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    jenv, lenv = system.juicefs_env(100), system.litestream_env()
    # JuiceFS's S3 client reads AWS_*; ACCESS_KEY / SECRET_KEY would be stored by `format` in
    # the volume's settings, which Litestream replicates into the bucket (docs/mounts.md).
    assert jenv["AWS_ACCESS_KEY_ID"] == settings.S3_ACCESS_KEY_ID
    assert jenv["AWS_SECRET_ACCESS_KEY"] == settings.S3_SECRET_ACCESS_KEY
    assert "ACCESS_KEY" not in jenv and "SECRET_KEY" not in jenv
    assert lenv["AWS_SECRET_ACCESS_KEY"] == settings.S3_SECRET_ACCESS_KEY
    assert "AWS_CA_BUNDLE" not in jenv and "AWS_CA_BUNDLE" not in lenv
    assert jenv["GOMEMLIMIT"] == f"{100 + settings.JUICEFS_MEMORY_OVERHEAD_MB}MiB"
    # With the watchdog (the default) juicefs starts its own; without, it is the server.
    assert "JFS_SUPERVISOR" not in jenv
    settings.JUICEFS_WATCHDOG = False
    assert system.juicefs_env(100)["JFS_SUPERVISOR"] == "1"
    assert "JFS_SUPERVISOR" not in system.juicefs_env()  # format, clone: no mount


def test_format_without_secrets_keeps_everything_but_the_s3_credentials():
    stored = {"Name": "workspace", "UUID": "u", "Bucket": "http://s3/b", "AccessKey": "AK",
              "SecretKey": "sealed", "SessionToken": "tok", "KeyEncrypted": True,
              "TrashDays": 7}
    assert system.format_without_secrets(stored) == {
        "Name": "workspace", "UUID": "u", "Bucket": "http://s3/b", "TrashDays": 7}
    # a volume with data encryption keeps its (equally sealed) EncryptKey and the flag
    encrypted = {**stored, "EncryptKey": "sealed-rsa"}
    assert system.format_without_secrets(encrypted) == {
        "Name": "workspace", "UUID": "u", "Bucket": "http://s3/b", "TrashDays": 7,
        "EncryptKey": "sealed-rsa", "KeyEncrypted": True}
    clean = {"Name": "workspace", "UUID": "u", "TrashDays": 7}
    assert system.format_without_secrets(clean) == clean


def test_litestream_config_renders_the_design_schedule(settings, tmp_path):
    settings.WELDR_ENV_VOL = tmp_path
    settings.LITESTREAM_SYNC_INTERVAL = "10s"
    settings.LITESTREAM_SNAPSHOT_INTERVAL, settings.LITESTREAM_RETENTION = "1h", "4h"
    p = system.paths("b-1")
    config = yaml.safe_load(system.litestream_config(p))
    (db,) = config["dbs"]
    assert db["path"] == str(p.meta_db)
    replica = db["replica"]
    assert replica["bucket"] == "b-1" and replica["sync-interval"] == "10s"
    # the replica lives outside JuiceFS's data prefix
    assert not replica["path"].startswith(system.VOLUME_NAME + "/")
    assert replica["endpoint"] == settings.S3_ENDPOINT
    assert config["snapshot"] == {"interval": "1h", "retention": "4h"}
    assert config["socket"]["path"] == str(p.litestream_socket)
    assert "secret" not in system.litestream_config(p).lower().replace("secret_", "")


def test_restore_point_is_upload_delay_and_margin_back_unless_synced_later(settings):
    settings.WRITEBACK_ENABLED, settings.UPLOAD_DELAY = True, "5m"
    settings.RESTORE_MARGIN_SECONDS = 60
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert system.restore_point(now, None) == now - timedelta(minutes=6)
    synced = now - timedelta(seconds=30)
    assert system.restore_point(now, synced) == synced
    assert system.restore_point(now, now - timedelta(hours=1)) == now - timedelta(minutes=6)
    settings.WRITEBACK_ENABLED = False
    assert system.restore_point(now, None) is None


@pytest.mark.parametrize("value,seconds", [("500ms", 0.5), ("30s", 30), ("5m", 300),
                                           ("1h", 3600), ("7", 7)])
def test_duration_seconds(value, seconds):
    assert system.duration_seconds(value) == seconds


def test_staged_block_key_maps_the_staging_folder_to_object_keys(tmp_path):
    cache = tmp_path / "cache"
    staged = cache / "uuid-1" / "rawstaging" / "chunks" / "0" / "0" / "12_0_4096"
    assert system.staged_block_key(cache, staged) == "workspace/chunks/0/0/12_0_4096"
    assert system.staged_block_key(cache, cache / "uuid-1" / "raw" / "chunks" / "0" / "0" /
                                   "12_0_4096") is None
    assert system.staged_block_key(cache, staged.with_name("12_0_4096.tmp")) is None
    assert system.staged_block_key(cache, Path("/elsewhere/x")) is None


def test_restore_argv_is_integrity_checked_and_timestamped(settings, tmp_path):
    p = system.paths("b-1")
    when = datetime(2026, 1, 1, 12, 0, 5, 250000, tzinfo=UTC)
    argv = system.litestream_restore_argv("litestream", p, timestamp=when, output=tmp_path / "o")
    assert _flag(argv, "-timestamp") == "2026-01-01T12:00:05.250000Z"
    assert _flag(argv, "-integrity-check") == "quick"
    assert _flag(argv, "-o") == str(tmp_path / "o")


def test_restore_argv_names_an_exact_state_by_txid_and_plans_without_writing(tmp_path):
    p = system.paths("b-1")
    argv = system.litestream_restore_argv("litestream", p, timestamp=None, txid=0x2a,
                                          output=tmp_path / "o")
    assert _flag(argv, "-txid") == "000000000000002a" and "-timestamp" not in argv
    assert _flag(argv, "-integrity-check") == "quick" and argv[-1] == str(p.meta_db)
    latest = system.litestream_restore_argv("litestream", p, timestamp=None, output=tmp_path)
    assert "-txid" not in latest and "-timestamp" not in latest
    when = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    plan = system.litestream_restore_plan_argv("litestream", p, timestamp=when)
    assert "-dry-run" in plan and "-json" in plan and _flag(plan, "-timestamp").startswith(
        "2026-01-01T12:00:05")
    assert system.litestream_ltx_argv("litestream", p)[-4:] == ["-level", "all", "-json",
                                                                 str(p.meta_db)]


def test_replica_states_are_every_files_last_txid_newest_first_at_their_first_shipping():
    listing = [
        {"level": 0, "min_txid": "0000000000000004", "max_txid": "0000000000000004",
         "timestamp": "2026-12-06T13:18:26Z"},
        {"level": 0, "min_txid": "0000000000000005", "max_txid": "0000000000000005",
         "timestamp": "2026-12-06T13:18:27Z"},
        {"level": 1, "min_txid": "0000000000000001", "max_txid": "0000000000000005",
         "timestamp": "2026-12-06T13:18:40Z"},
        {"level": 9, "min_txid": "0000000000000001", "max_txid": "000000000000000a",
         "timestamp": "bad"},
    ]
    states = system.replica_states(listing)
    assert [state.txid for state in states] == [10, 5, 4]
    assert states[0].at is None
    assert states[1].at == datetime(2026, 12, 6, 13, 18, 27, tzinfo=UTC)
    assert system.restore_plan_txid({"max_txid": "000000000000001f"}) == 31
    assert system.restore_plan_txid({}) is None


# ---------------------------------------------------------------------------------------------
# Image layout builders
# ---------------------------------------------------------------------------------------------


def test_image_layout_paths_keep_the_workspace_and_move_juicefs(settings, tmp_path):
    settings.WELDR_ENV_VOL = tmp_path / "vol"
    settings.WORKSPACE_BASE = tmp_path / "ws"
    files, image = system.paths("b-1"), system.paths("b-1", system.IMAGE)
    assert files.volume_point == files.mount_point == tmp_path / "ws" / "b-1"
    assert image.mount_point == tmp_path / "ws" / "b-1"
    assert image.volume_point == tmp_path / "vol" / "volumes" / "b-1"
    assert image.image == tmp_path / "vol" / "volumes" / "b-1" / ".weldr" / "workspace.ext4"
    # a daemon's identity does not depend on the layout (found after a crash either way)
    assert system.daemon_tag(files, system.JUICEFS) == system.daemon_tag(image, system.JUICEFS)
    argv = system.juicefs_mount_argv("juicefs", image, system.Budget(1, 1), free_ratio=0.1)
    assert argv[3] == str(image.volume_point)


AGENT_DIR = system.Node(system.NODE_DIR, 0o700, 0, 0)
AGENT_IMAGE = system.Node(system.NODE_FILE, 0o644, 0, 0)


@pytest.mark.parametrize(("names", "weldr", "image", "layout"), [
    (set(), None, None, None),
    ({".trash"}, None, None, None),
    ({".weldr"}, AGENT_DIR, AGENT_IMAGE, "image"),
    ({".weldr", ".trash"}, AGENT_DIR, AGENT_IMAGE, "image"),
    ({"src", ".trash"}, None, None, "files"),
    ({"README.md"}, None, None, "files"),
    # what a sandbox (uid 1000) or the files API can make in a files workspace: files
    ({".weldr"}, system.Node(system.NODE_DIR, 0o700, 1000, 1000), AGENT_IMAGE, "files"),
    ({".weldr"}, AGENT_DIR, system.Node(system.NODE_FILE, 0o644, 1000, 1000), "files"),
    ({".weldr"}, system.Node(system.NODE_DIR, 0o755, 0, 0), AGENT_IMAGE, "files"),
    ({".weldr"}, AGENT_DIR, None, "files"),
    ({".weldr", "src"}, AGENT_DIR, AGENT_IMAGE, "files"),
    ({".weldr"}, AGENT_DIR, system.Node(3, 0o777, 0, 0), "files"),  # a symlink
])
def test_an_unrecorded_volume_is_image_only_where_the_agent_made_it(names, weldr, image,
                                                                     layout):
    assert system.legacy_layout(names, weldr, image) == layout


def test_the_layout_record_is_parsed_strictly():
    assert system.layout_parse("image\n") == "image"
    assert system.layout_parse("files") == "files"
    for bad in ("", "zfs", "image\nfiles", "IMAGE"):
        with pytest.raises(ValueError):
            system.layout_parse(bad)
    assert system.LAYOUT_KEY.startswith("weldr-meta/")
    assert not system.LAYOUT_KEY.startswith(f"{system.VOLUME_NAME}/")


def test_image_argv_builders():
    image = Path("/v/b/.weldr/workspace.ext4")
    mkfs = system.mkfs_ext4_argv(image, label="a-very-long-bucket-name")
    assert mkfs[0] == "mkfs.ext4" and mkfs[-1] == str(image)
    assert _flag(mkfs, "-m") == "0" and _flag(mkfs, "-e") == "remount-ro"
    assert _flag(mkfs, "-L") == "a-very-long-buck"  # ext4 labels hold 16 bytes
    assert "^has_journal" not in " ".join(mkfs)  # the journal is what makes a crash safe
    assert system.e2fsck_argv(image) == ["e2fsck", "-p", str(image)]
    assert [system.e2fsck_ok(code) for code in (0, 1, 2, 4, 8)] == [True] * 3 + [False] * 2
    assert system.losetup_attach_argv(image, direct_io=True) == [
        "losetup", "--find", "--show", "--direct-io=on", str(image)]
    assert system.losetup_detach_argv("/dev/loop7") == ["losetup", "--detach", "/dev/loop7"]
    mount = system.ext4_mount_argv("/dev/loop7", Path("/ws/b"))
    assert mount[:4] == ["mount", "-t", "ext4", "-o"]
    assert set(mount[4].split(",")) >= {"noatime", "errors=remount-ro", "nodiscard", "nosuid",
                                        "nodev"}
    assert system.fstrim_argv(Path("/ws/b")) == ["fstrim", "/ws/b"]
