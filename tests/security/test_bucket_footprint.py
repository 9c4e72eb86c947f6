"""The zero-RPO sync reads the volume's compression from JuiceFS's `.config` at the root of its
mount — for a `files` workspace, the root the sandbox writes in. Attack from inside a real
sandbox: plant, replace or link `.config` so that the agent (root) would encode the blocks it
puts into S3 wrongly (raw blocks in a zstd volume: unreadable after machine loss). JuiceFS
serves its internal files ahead of anything in the root, so the agent must still read
JuiceFS's own configuration, and every block the sync puts must still decode."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import AgentProcess, agent_client, running_agent
from tests.security.test_mounts import _bucket_remove, _exec, _mount, _unmount
from weldr_agent import runner, s3

pytestmark = pytest.mark.slow
BLOCK_KEY = re.compile(r"/chunks/\d+/\d+/\d+_\d+_(\d+)$")
FORGE = r"""
printf '{"Format": {"Compression": "none"}}' > forged.json
for try in 'cp forged.json .config' 'rm -f .config' 'mv -f forged.json .config' \
           'ln -sf /etc/passwd .config' 'ln -sf forged.json .config' 'mkdir .config'; do
  sh -c "$try" 2>&1 | head -n 1
done
head -c 3000000 /dev/zero > zeros.bin
head -c 2000000 /dev/urandom > random.bin
echo done
"""


@pytest.fixture(scope="module")
def files_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    yield from running_agent(tmp_path_factory.mktemp("footprint-agent"), WORKSPACE_LAYOUT="files")


@pytest.fixture(scope="module")
def http(files_agent: AgentProcess) -> Iterator[httpx.Client]:
    yield from agent_client(files_agent)


@pytest.fixture
def bucket() -> Iterator[str]:
    import secrets

    name = f"sec-{secrets.token_hex(4)}"
    yield name
    _bucket_remove(name)


def test_a_forged_config_in_a_files_workspace_never_changes_how_blocks_are_encoded(
        http: httpx.Client, bucket: str, tmp_path: Path):
    # given a files workspace: JuiceFS's root is the sandbox's working directory
    mounted = _mount(http, bucket)
    assert mounted["layout"] == "files"
    workspace = Path(mounted["path"])
    try:
        # when the sandbox tries every way to put its own `.config` there, then writes data
        made = _exec(http, bucket, FORGE)
        assert made["exit_code"] == 0 and "done" in made["stdout"], made
        # then what the agent reads there is still JuiceFS's own configuration
        config = json.loads((workspace / ".config").read_bytes())
        assert config["Format"]["Compression"] == "zstd" and "Meta" in config
        # and the zero-RPO sync puts blocks that decode to the sizes their keys name
        synced = http.post(f"/mounts/{bucket}/sync")
        assert synced.status_code == 200, synced.text
        client = s3.client()
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="workspace/chunks/") for item in page.get("Contents", [])]
        assert keys
        for key in keys:
            frame = tmp_path / "frame.zst"
            frame.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            plain = runner.run(["zstd", "-d", "-c", "-q", str(frame)], timeout=60, text=False)
            assert len(plain.stdout) == int(BLOCK_KEY.search(key).group(1)), key
    finally:
        _unmount(http, bucket)
