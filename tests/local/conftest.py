"""Fixtures for the branch-directory scripts: a scratch machine (env volume) and real S3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import fresh_bucket
from weldr_agent import runner, s3

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


@dataclass
class Machine:
    """One machine's view: its env volume, branch directories and the scripts' environment."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def branches(self) -> Path:
        return self.root / "branches"

    def run(self, script: str, *args: str, check: bool = True,
            extra: dict[str, str] | None = None, timeout: float = 300) -> runner.Completed:
        return runner.run([SCRIPTS / script, *args], env={**self.env, **(extra or {})},
                          timeout=timeout, check=check)

    def popen(self, script: str, *args: str, extra: dict[str, str] | None = None):  # noqa: ANN201
        return runner.popen([SCRIPTS / script, *args], env={**self.env, **(extra or {})},
                            stdout=runner.DEVNULL, stderr=runner.DEVNULL)

    def state(self, branch: str, project: str = "p1") -> Path:
        """The markers' directory of a branch directory (beside it, never in it)."""
        return self.branches / ".meta" / project / branch

    def wipe(self) -> None:
        """A fresh machine: the local disk is gone, S3 is all that is left."""
        runner.run(["rm", "-rf", "--", self.branches], timeout=120)


def machine_env(root: Path) -> dict[str, str]:
    return runner.clean_env({
        "WELDR_ENV_VOL": str(root),
        "WELDR_BRANCHES_DIR": str(root / "branches"),
        "S3_ENDPOINT": os.environ["S3_ENDPOINT"],
        "S3_ACCESS_KEY_ID": os.environ["S3_ACCESS_KEY_ID"],
        "S3_SECRET_ACCESS_KEY": os.environ["S3_SECRET_ACCESS_KEY"],
        "S3_REGION": os.environ.get("S3_REGION", "auto"),
    })


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    root = tmp_path / "env"
    root.mkdir()
    return Machine(root, machine_env(root))


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh bucket on the test run's S3 server, emptied and removed afterwards."""
    with fresh_bucket("wl") as name:
        yield name


def s3_keys(bucket: str, prefix: str = "") -> set[str]:
    client = s3.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def s3_text(bucket: str, key: str) -> str:
    return s3.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Path -> (kind, content:size:mode or link target) of every file and link."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_file():
            mode = oct(path.stat().st_mode & 0o777)
            found[rel] = ("file", f"{path.read_bytes().hex()[:64]}:{path.stat().st_size}:{mode}")
    return found
