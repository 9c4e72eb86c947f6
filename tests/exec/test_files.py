"""The files API against a real agent: confinement, binary safety, caps, headers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


JUICEFS_VIRTUAL = {".accesslog", ".stats", ".config", ".trash", ".control"}


def snapshot(root: Path) -> dict[str, tuple]:
    """Metadata of everything under the workspace's parent: to prove nothing changed.

    Only lstat, never reads: JuiceFS's virtual `.accesslog` would block a reader forever.
    """
    state: dict[str, tuple] = {}
    for base, dirs, names in os.walk(root.parent):
        dirs[:] = [name for name in dirs if name not in JUICEFS_VIRTUAL]
        for name in dirs + names:
            if name in JUICEFS_VIRTUAL:
                continue
            info = os.lstat(Path(base) / name)
            state[str(Path(base) / name)] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return state


def test_write_read_list_delete(http: httpx.Client, bucket: str, workspace: Path) -> None:
    raw = bytes(range(256)) * 100

    written = http.put(f"/files/{bucket}/content", params={"path": "deep/dir/blob.bin"},
                       content=raw)

    assert written.status_code == 200, written.text
    assert written.json() == {"path": "deep/dir/blob.bin", "size": len(raw)}
    assert (workspace / "deep/dir/blob.bin").read_bytes() == raw
    assert (workspace / "deep/dir/blob.bin").stat().st_uid == 1000
    assert (workspace / "deep").stat().st_uid == 1000
    read = http.get(f"/files/{bucket}/content", params={"path": "deep/dir/blob.bin"})
    assert read.content == raw
    assert read.headers["content-length"] == str(len(raw))
    assert read.headers["content-type"] == "application/octet-stream"
    listing = http.get(f"/files/{bucket}", params={"path": "deep/dir"}).json()
    assert [(e["name"], e["type"], e["size"]) for e in listing["entries"]] == [
        ("blob.bin", "file", len(raw))]
    assert http.delete(f"/files/{bucket}/content",
                       params={"path": "deep/dir/blob.bin"}).status_code == 204
    assert not (workspace / "deep/dir/blob.bin").exists()


def test_content_type_and_overwrite_keeps_mode(http: httpx.Client, bucket: str,
                                               workspace: Path) -> None:
    script = workspace / "run.sh"
    script.write_text("old")
    script.chmod(0o755)

    http.put(f"/files/{bucket}/content", params={"path": "run.sh"}, content=b"echo new\n")

    assert script.read_text() == "echo new\n"
    assert script.stat().st_mode & 0o777 == 0o755
    http.put(f"/files/{bucket}/content", params={"path": "page.html"}, content=b"<p>hi</p>")
    page = http.get(f"/files/{bucket}/content", params={"path": "page.html"})
    assert page.headers["content-type"] == "text/html"
    assert not [name for name in os.listdir(workspace) if name.endswith(".tmp")]


def test_written_files_are_usable_by_commands(http: httpx.Client, bucket: str) -> None:
    http.put(f"/files/{bucket}/content", params={"path": "shared/note.txt"}, content=b"v1")

    result = http.post("/exec", json={"bucket": bucket,
                                      "command": "cat note.txt; echo v2 > note.txt; "
                                                 "touch more.txt && echo ok",
                                      "cwd": "shared"}).json()

    assert result["stdout"] == "v1ok\n", result
    assert http.get(f"/files/{bucket}/content",
                    params={"path": "shared/note.txt"}).content == b"v2\n"


def test_listing_reports_types_without_following(http: httpx.Client, bucket: str,
                                                 workspace: Path) -> None:
    (workspace / "kinds").mkdir()
    (workspace / "kinds" / "file").write_bytes(b"12345")
    (workspace / "kinds" / "sub").mkdir()
    (workspace / "kinds" / "link").symlink_to("/etc")

    entries = http.get(f"/files/{bucket}", params={"path": "kinds"}).json()["entries"]

    assert {e["name"]: e["type"] for e in entries} == {"file": "file", "sub": "dir",
                                                       "link": "symlink"}
    assert all(e["mtime"].endswith("Z") or "+00:00" in e["mtime"] for e in entries)
    root = http.get(f"/files/{bucket}").json()["entries"]
    assert "kinds" in {e["name"] for e in root}


# path -> the code every method answers: outside the workspace, or through a symlink (which the
# agent never follows, wherever it points).
TRAVERSALS = {"../escape.txt": "invalid_path", "a/../../escape.txt": "invalid_path",
              "/etc/passwd": "invalid_path", "/tmp/escape.txt": "invalid_path",
              "out-link/escape.txt": "is_symlink", "up-link/escape.txt": "is_symlink",
              "in-link/escape.txt": "is_symlink", "nul\x00byte.txt": "invalid_path",
              "..": "invalid_path", "./../escape.txt": "invalid_path"}
# Final components that are symlinks: read, written, listed never; deleted as links.
LINKS = ["out-link", "abs-link", "up-link", "in-link"]


@pytest.fixture(scope="module")
def traps(workspace: Path) -> Path:
    (workspace / "out-link").symlink_to(workspace.parent)
    (workspace / "abs-link").symlink_to("/etc/hostname")
    (workspace / "up-link").symlink_to("../..")
    (workspace / "in-dir").mkdir()
    (workspace / "in-link").symlink_to("in-dir")
    return workspace


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_attempts_are_400_and_touch_nothing(http: httpx.Client, bucket: str,
                                                      traps: Path, path: str) -> None:
    before = snapshot(traps)
    for method in ("GET", "PUT", "DELETE"):
        response = http.request(method, f"/files/{bucket}/content", params={"path": path},
                                content=b"x" if method == "PUT" else None)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json()["code"] == TRAVERSALS[path], (method, path)
    listing = http.get(f"/files/{bucket}", params={"path": path})
    assert listing.status_code == 400 and listing.json()["code"] == TRAVERSALS[path]
    assert snapshot(traps) == before
    assert not (traps.parent / "escape.txt").exists()


@pytest.mark.parametrize("path", LINKS)
def test_a_symlink_is_never_read_written_or_listed_through(http: httpx.Client, bucket: str,
                                                           traps: Path, path: str) -> None:
    before = snapshot(traps)
    for method, url in (("GET", "/content"), ("PUT", "/content"), ("GET", "")):
        response = http.request(method, f"/files/{bucket}{url}", params={"path": path},
                                content=b"x" if method == "PUT" else None)
        assert response.status_code == 400, (method, url, path, response.text)
        assert response.json()["code"] == "is_symlink", (method, url, path)
    assert snapshot(traps) == before


def test_percent_encoded_dots_are_refused(http: httpx.Client, bucket: str) -> None:
    # The query string is decoded once: %2e%2e/ is `../`.
    for query in ("path=%2e%2e/escape.txt", "path=%2E%2E%2Fescape.txt", "path=a%00b"):
        response = http.get(f"/files/{bucket}/content?{query}")
        assert response.status_code == 400, query
        assert response.json()["code"] == "invalid_path"


def test_a_symlink_inside_the_workspace_is_not_followed(http: httpx.Client, bucket: str,
                                                       workspace: Path) -> None:
    # Changed by issue #11: even a link that stays inside is a link; the API says so (it used
    # to serve the target) and deleting it removes the link, not the target.
    (workspace / "real.txt").write_text("inside")
    (workspace / "alias.txt").symlink_to("real.txt")

    read = http.get(f"/files/{bucket}/content", params={"path": "alias.txt"})
    written = http.put(f"/files/{bucket}/content", params={"path": "alias.txt"}, content=b"new")
    deleted = http.delete(f"/files/{bucket}/content", params={"path": "alias.txt"})

    assert (read.status_code, read.json()["code"]) == (400, "is_symlink")
    assert (written.status_code, written.json()["code"]) == (400, "is_symlink")
    assert deleted.status_code == 204
    assert not (workspace / "alias.txt").is_symlink()
    assert (workspace / "real.txt").read_text() == "inside"


def test_fifos_are_refused_without_blocking(http: httpx.Client, bucket: str,
                                            workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    try:
        response = http.get(f"/files/{bucket}/content", params={"path": "pipe"}, timeout=10)
        assert (response.status_code, response.json()["code"]) == (400, "not_a_file")
        listed = http.get(f"/files/{bucket}").json()["entries"]
        assert {"name": "pipe", "type": "other"}.items() <= next(
            e for e in listed if e["name"] == "pipe").items()
    finally:
        (workspace / "pipe").unlink()


def test_errors(http: httpx.Client, bucket: str, workspace: Path) -> None:
    (workspace / "adir").mkdir(exist_ok=True)
    (workspace / "adir" / "x").write_text("x")
    cases = [
        ("GET", "content", "missing.txt", 404, "not_found"),
        ("GET", "content", "adir", 400, "not_a_file"),
        ("GET", "list", "adir/x", 400, "not_a_directory"),
        ("GET", "list", "missing-dir", 404, "not_found"),
        ("DELETE", "content", "missing.txt", 404, "not_found"),
        ("DELETE", "content", "adir", 409, "directory_not_empty"),
        ("PUT", "content", "adir", 400, "not_a_file"),
        ("PUT", "content", "adir/x/y", 400, "not_a_directory"),
        ("PUT", "content", "", 400, "invalid_path"),
    ]
    for method, kind, path, status, code in cases:
        url = f"/files/{bucket}" + ("/content" if kind == "content" else "")
        response = http.request(method, url, params={"path": path},
                                content=b"x" if method == "PUT" else None)
        assert (response.status_code, response.json()["code"]) == (status, code), (method, path)
    deleted = http.delete(f"/files/{bucket}/content", params={"path": "adir",
                                                              "recursive": "true"})
    assert deleted.status_code == 204 and not (workspace / "adir").exists()


def test_not_mounted_is_409(http: httpx.Client) -> None:
    response = http.get("/files/not-mounted-bucket", params={"path": ""})

    assert response.status_code == 409
    assert response.json()["code"] == "not_mounted"


def test_upload_over_the_cap_is_413(http: httpx.Client, bucket: str, workspace: Path) -> None:
    # FILE_UPLOAD_MAX_BYTES is 1 MiB for this agent.
    response = http.put(f"/files/{bucket}/content", params={"path": "big.bin"},
                        content=b"x" * (1024 * 1024 + 1))

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert not (workspace / "big.bin").exists()
    assert not [name for name in os.listdir(workspace) if name.endswith(".tmp")]

    chunked = http.put(f"/files/{bucket}/content", params={"path": "big.bin"},
                       content=iter([b"x" * 600_000, b"y" * 600_000]))
    assert chunked.status_code == 413
    assert not (workspace / "big.bin").exists()
    exact = http.put(f"/files/{bucket}/content", params={"path": "big.bin"},
                     content=b"z" * (1024 * 1024))
    assert exact.status_code == 200 and exact.json()["size"] == 1024 * 1024


def test_recursive_delete_removes_links_not_their_targets(http: httpx.Client, bucket: str,
                                                          workspace: Path,
                                                          tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    tree = workspace / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_text("x")
    (tree / "a" / "out").symlink_to(outside)
    (tree / "pipe").parent.mkdir(exist_ok=True)
    os.mkfifo(tree / "pipe")

    response = http.delete(f"/files/{bucket}/content", params={"path": "tree",
                                                               "recursive": "true"})

    assert response.status_code == 204, response.text
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "keep"
