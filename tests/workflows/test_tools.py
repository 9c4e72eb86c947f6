"""The model's tools: validation, confinement to the workspace, size caps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commands.services import exec_bucket_cleanup
from workflows.providers.base import ToolCall
from workflows.tools import MAX_RESULT_CHARS, ToolContext, tool_execute, tool_specs


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    changes: list[tuple[str, str]] = []
    ctx = ToolContext(workspace=workspace, bucket="ws",
                      on_file_changed=lambda path, change: changes.append((path, change)))
    ctx.changes = changes  # type: ignore[attr-defined]
    return ctx


def call(context: ToolContext, name: str, **arguments: object):  # type: ignore[no-untyped-def]
    return tool_execute(context, ToolCall(id="c1", name=name, arguments=dict(arguments)))


def test_every_tool_has_a_json_schema() -> None:
    names = {spec.name for spec in tool_specs()}
    assert names == {
        "list_directory", "read_file", "write_file", "edit_file", "delete_file", "find_files",
        "grep", "run_command", "install_packages", "remove_packages", "start_preview",
        "check_preview", "add_integration", "done"}
    for spec in tool_specs():
        assert spec.parameters["type"] == "object"
        assert spec.parameters["additionalProperties"] is False


def test_write_read_edit_delete_and_list(context: ToolContext) -> None:
    assert not call(context, "write_file", path="src/a.txt", content="one two\n").is_error
    assert call(context, "read_file", path="src/a.txt").content == "one two\n"
    assert not call(context, "edit_file", path="src/a.txt", search="two", replace="2").is_error
    assert (context.workspace / "src/a.txt").read_text() == "one 2\n"
    assert call(context, "list_directory", path=".").content == "src/"
    assert call(context, "find_files", pattern="*.txt").content == "src/a.txt"
    assert call(context, "grep", pattern="one").content == "src/a.txt:1: one 2"
    assert not call(context, "delete_file", path="src/a.txt").is_error
    assert context.changes == [  # type: ignore[attr-defined]
        ("src/a.txt", "created"), ("src/a.txt", "modified"), ("src/a.txt", "deleted")]


def test_edit_file_refuses_absent_and_ambiguous_search(context: ToolContext) -> None:
    (context.workspace / "f.txt").write_text("x x\n")
    absent = call(context, "edit_file", path="f.txt", search="y", replace="z")
    ambiguous = call(context, "edit_file", path="f.txt", search="x", replace="z")
    assert absent.is_error and "not found" in absent.content
    assert ambiguous.is_error and "occurs 2 times" in ambiguous.content
    assert (context.workspace / "f.txt").read_text() == "x x\n"


@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", "/tmp/outside.txt",
                                  ".git/config", "link/outside.txt", "filelink"])
def test_paths_outside_the_workspace_are_refused(context: ToolContext, tmp_path: Path,
                                                 path: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, context.workspace / "link")
    os.symlink(outside / "secret", context.workspace / "filelink")
    for name, extra in (("write_file", {"content": "x"}), ("read_file", {}),
                        ("edit_file", {"search": "secret", "replace": "x"}),
                        ("grep", {"pattern": "secret"}), ("list_directory", {})):
        if name in ("grep", "list_directory") and path == ".git/config":
            continue
        args = {("pattern" if k == "pattern" else k): v for k, v in extra.items()}
        result = call(context, name, **({"path": path} | args))
        assert result.is_error, (name, path, result.content)
        assert "secret" not in result.content.replace(f"{path}", ""), (name, path)
    deleted = call(context, "delete_file", path=path)
    # Deleting a symlink removes the link itself, never what it points to.
    assert deleted.is_error == (path != "filelink"), (path, deleted.content)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_text() == "secret"


def test_bad_arguments_unknown_tools_and_invalid_json_are_error_results(
        context: ToolContext) -> None:
    missing = call(context, "write_file", path="a.txt")
    wrong_type = call(context, "write_file", path="a.txt", content=3)
    extra = call(context, "read_file", path="a.txt", mode="rb")
    unknown = call(context, "format_disk")
    broken = tool_execute(context, ToolCall(id="c", name="read_file", arguments=None,
                                            raw_arguments='{"path": '))
    assert "'content' is a required property" in missing.content
    assert "content" in wrong_type.content and "string" in wrong_type.content
    assert "mode" in extra.content
    assert "Unknown tool" in unknown.content
    assert "not valid JSON" in broken.content
    assert all(r.is_error for r in (missing, wrong_type, extra, unknown, broken))


def test_results_are_size_capped(context: ToolContext) -> None:
    (context.workspace / "big.txt").write_text("y" * (MAX_RESULT_CHARS * 3))
    result = call(context, "read_file", path="big.txt")
    assert len(result.content) < MAX_RESULT_CHARS + 100
    assert "truncated" in result.content


def test_run_command_reports_exit_code_and_output(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    # Commands run in the bucket's exec sandbox (started in this process), as its user.
    workspace = Path("/tmp") / f"wf-tools-{os.getpid()}"
    workspace.mkdir(mode=0o755, exist_ok=True)
    bucket = f"tools-{os.getpid()}"
    try:
        context = ToolContext(workspace=workspace, bucket=bucket)
        (workspace / "hello.txt").write_text("hi\n")
        ok = call(context, "run_command", command="cat hello.txt; id -u")
        failing = call(context, "run_command", command="exit 3")
        slow = call(context, "run_command", command="sleep 5", timeout=1)
        assert "exit code 0" in ok.content and "hi" in ok.content
        assert str(settings.SANDBOX_UID) in ok.content
        assert "exit code 3" in failing.content
        assert "timed out" in slow.content
    finally:
        exec_bucket_cleanup(bucket)
        (workspace / "hello.txt").unlink(missing_ok=True)
        workspace.rmdir()


def test_check_preview_without_a_preview_is_a_clear_tool_error(context: ToolContext) -> None:
    result = call(context, "check_preview")
    # no preview for this bucket: a tool error the model reads, not an exception
    assert result.is_error and "preview" in result.content.lower()


def test_done_records_the_summary(context: ToolContext) -> None:
    assert call(context, "done", summary="Did it").content == "Finished."
    assert context.done and context.summary == "Did it"
