"""The bucket's footprint settings (docs/performance.md, "Bucket footprint"): new volumes are
zstd-compressed with one trash day, and what the zero-RPO sync puts into S3 itself is encoded as
JuiceFS would encode it — an object JuiceFS cannot decode is a lost block after machine loss
(tests/mounts/test_durability.py reads such a workspace back on a new machine)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from mounts import steps, system
from tests.mounts.conftest import write_tree
from weldr_agent import runner, s3

LAYOUTS = pytest.mark.parametrize("layout", [system.FILES, system.IMAGE])
BLOCK_KEY = re.compile(r"/chunks/\d+/\d+/\d+_\d+_(\d+)$")


def test_format_argv_compresses_and_keeps_one_trash_day(settings):
    argv = system.juicefs_format_argv("juicefs", system.paths("b-1"))
    assert argv[argv.index("--compress") + 1] == "zstd"
    assert argv[argv.index("--trash-days") + 1] == "1"
    assert argv[argv.index("--block-size") + 1] == "4096"
    # urfave/cli stops at the first argument: every option comes before META-URL and NAME.
    assert argv[-2:] == [system.paths("b-1").meta_url, system.VOLUME_NAME]


def test_config_compression_reads_what_juicefs_reports():
    assert system.config_compression(b'{"Format": {"Compression": "zstd"}}') == "zstd"
    assert system.config_compression(b'{"Format": {"Name": "workspace"}}') == "none"
    assert system.config_compression(b"[]") == "none"
    with pytest.raises(ValueError):
        system.config_compression(b"not json")


def test_zstd_argv_ends_options_before_the_files(tmp_path):
    argv = system.zstd_argv([tmp_path / "-1_0_4096"], tmp_path / "out")
    assert argv[:2] == ["zstd", "-1"] and argv[-2:] == ["--", str(tmp_path / "-1_0_4096")]


@LAYOUTS
def test_a_zero_rpo_sync_puts_blocks_that_juicefs_can_decode(api, bucket, layout, tmp_path):
    # given a new volume (the settings' compression) with data staged but not uploaded
    mount = api.post("/mounts", {"bucket": bucket, "layout": layout}, format="json").json()
    p = system.paths(bucket, layout)
    assert steps.volume_compression(p) == "zstd"
    workspace = Path(mount["path"])
    (workspace / "zeros.bin").write_bytes(bytes(3 * 1024 * 1024))
    (workspace / "random.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (workspace / "text.txt").write_text("export const answer = 42;\n" * 20000)
    # when the sync uploads the staged blocks itself
    assert api.post(f"/mounts/{bucket}/sync").status_code == 200
    # then every block object in the bucket is a zstd frame of the size its key names
    client = s3.client()
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{system.VOLUME_NAME}/chunks/") for item in page.get("Contents", [])]
    assert keys
    for key in keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        frame = tmp_path / "frame.zst"
        frame.write_bytes(body)
        plain = runner.run(["zstd", "-d", "-c", "-q", str(frame)], timeout=60, text=False)
        assert len(plain.stdout) == int(BLOCK_KEY.search(key).group(1)), key
    # and the compressed copies were removed after their upload
    assert not any((p.cache_dir / system.ENCODED_DIR).iterdir())
    # and JuiceFS says so of the volume itself
    config = json.loads((p.volume_point / ".config").read_bytes())
    assert config["Format"]["Compression"] == "zstd" and config["Format"]["TrashDays"] == 1


def _in_bucket(bucket: str, key: str) -> bool:
    try:
        s3.client().head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


@pytest.mark.parametrize("run", range(3))
def test_a_clean_unmount_leaves_no_block_staged_only(api, bucket, run):
    # given an image workspace with files (the ext4's unmount writes its superblock last)
    mount = api.post("/mounts", {"bucket": bucket, "layout": system.IMAGE}, format="json").json()
    write_tree(Path(mount["path"]))
    # when it is unmounted cleanly (the zero-RPO sync, then JuiceFS's unmount)
    gone = api.post("/mounts/unmount", {"bucket": bucket}, format="json")
    assert gone.status_code == 200, gone.json()
    # then every block left in the staging folder is in S3 too: the metadata in S3 may name
    # any of them, and a new machine has nothing but S3
    p = system.paths(bucket, system.IMAGE)
    staged = [system.staged_block_key(p.cache_dir, path)
              for path in p.cache_dir.glob("*/rawstaging/**/*") if path.is_file()]
    assert staged  # JuiceFS keeps them staged until its own upload delay is over
    assert [key for key in staged if key and not _in_bucket(bucket, key)] == []
