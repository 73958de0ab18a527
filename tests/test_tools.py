"""The tools' activities on real files: confinement, previews, idempotency, at-most-once."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import os
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment

from hitl.activities.tools import ToolActivities
from hitl.models import (
    ToolAction,
    ToolCheck,
    ToolCheckRequest,
    ToolPreview,
    ToolRequest,
    ToolResult,
)
from hitl.text import quoted, visible
from hitl.toolkits.commands import RunCommandArgs
from hitl.toolkits.email import SendEmailArgs
from hitl.toolkits.files import DeleteFilesArgs, FindFilesArgs, ReadFileArgs, WriteFileArgs
from hitl.toolkits.workspace import JOURNAL_DIR, Journal
from hitl.tools import ToolContext, ToolRegistrationError, ToolRegistry, load_tools, tool
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in

TOOLS = ToolActivities(load_tools())
preview_tool, run_tool = TOOLS.preview_tool, TOOLS.run_tool
REGISTRY = load_tools()


def in_process() -> ActivityEnvironment:
    """The tool activities as this worker's own workflow code asks for them (a local
    activity): a remote caller's approval ids are checked with its run
    (tests/test_trust_attacks.py)."""
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, is_local=True)
    return environment


async def preview(workspace: Path, tool: str, **args: Any) -> ToolPreview:
    request = ToolRequest(action=ToolAction(tool=tool, args=args), workspace=str(workspace))
    return await in_process().run(preview_tool, request)


async def run(
    workspace: Path,
    tool: str,
    key: str | None = None,
    seen: ToolPreview | None = None,
    **args: Any,
) -> ToolResult:
    request = ToolRequest(
        action=ToolAction(tool=tool, args=args),
        workspace=str(workspace),
        idempotency_key=key,
        preview=seen,
    )
    return await in_process().run(run_tool, request)


async def test_find_files_filters_by_age_and_reports_size_and_time(workspace: Path) -> None:
    result = await run(workspace, "find_files", pattern="*.log", older_than_days=7)
    files = result.output["files"]
    assert sorted(item["path"] for item in files) == sorted(OLD_LOGS)
    assert all(item["size"] == 500 and item["modified"].endswith("+00:00") for item in files)
    everything = await run(workspace, "find_files")
    assert len(everything.output["files"]) == len(OLD_LOGS + NEW_LOGS + OTHER)


async def test_paths_are_confined_to_the_workspace(workspace: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (workspace / "escape").symlink_to(tmp_path)
    (workspace / "link.log").symlink_to(secret)
    for path, expected in [
        ("../secret.txt", "leads out of the workspace"),
        (str(secret), "is an absolute path"),
        ("escape/secret.txt", "outside the workspace through a symlink"),
        ("link.log", "outside the workspace through a symlink"),
        (f"{JOURNAL_DIR}/actions/x.json", "reserve"),
    ]:
        result = await run(workspace, "read_file", path=path)
        assert not result.ok and expected in (result.error or ""), path
    deleted = await run(workspace, "delete_files", key="apr_x", paths=["../secret.txt"])
    assert not deleted.ok and secret.exists()
    found = await run(workspace, "find_files", pattern="*.log")
    assert "link.log" not in [item["path"] for item in found.output["files"]]


async def test_delete_preview_lists_files_and_flags_missing_ones(workspace: Path) -> None:
    seen = await preview(workspace, "delete_files", paths=[*OLD_LOGS, "logs/gone.log"])
    assert seen.facts["existing"] == 3 and seen.facts["total_bytes"] == 1500
    assert "logs/gone.log does not exist" in seen.warnings
    assert "MISSING" in seen.details and all(name in seen.details for name in OLD_LOGS)
    assert seen.summary == "delete 3 files (1.5 KB), 1 not deletable"


async def test_delete_is_exact_idempotent_and_keeps_what_changed_since_the_preview(
    workspace: Path,
) -> None:
    seen = await preview(workspace, "delete_files", paths=OLD_LOGS)
    (workspace / OLD_LOGS[2]).write_text("rewritten after the reviewer looked")
    (workspace / "logs/app-2026-12-01.log").write_text("appeared later")
    first = await run(workspace, "delete_files", key="apr_1", seen=seen, paths=OLD_LOGS)
    assert first.output["deleted"] == OLD_LOGS[:2]
    assert first.output["kept"] == [
        {"path": OLD_LOGS[2], "reason": "changed since the reviewer saw the preview"}
    ]
    # A retry of the same approval returns what happened and does nothing more.
    again = await run(workspace, "delete_files", key="apr_1", seen=seen, paths=OLD_LOGS)
    assert again == first
    assert OLD_LOGS[2] in files_in(workspace) and "logs/app-2026-12-01.log" in files_in(workspace)


async def test_write_file_previews_a_diff_and_refuses_a_file_changed_since(
    workspace: Path,
) -> None:
    seen = await preview(workspace, "write_file", path="config/app.yaml", content="a: 1\n")
    assert seen.details.startswith("--- a/config/app.yaml")
    assert "+a: 1" in seen.details and "-" + "x" * 50 in seen.details
    (workspace / "config/app.yaml").write_text("someone else: edited\n")
    refused = await run(
        workspace, "write_file", key="apr_w", seen=seen, path="config/app.yaml", content="a: 1\n"
    )
    assert not refused.ok and "changed since the reviewer saw the diff" in (refused.error or "")
    assert (workspace / "config/app.yaml").read_text() == "someone else: edited\n"
    fresh = await preview(workspace, "write_file", path="new/settings.toml", content="x = 1\n")
    assert fresh.summary == "create new/settings.toml (+1 -0 lines)"
    done = await run(
        workspace,
        "write_file",
        key="apr_n",
        seen=fresh,
        path="new/settings.toml",
        content="x = 1\n",
    )
    assert done.ok and (workspace / "new/settings.toml").read_text() == "x = 1\n"


async def test_run_command_runs_once_with_a_time_limit_and_no_secrets(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-leaks")
    script = "import os; print(os.getcwd()); print(os.environ.get('OPENAI_API_KEY'))"
    seen = await preview(workspace, "run_command", argv=[sys.executable, "-c", script])
    assert sys.executable in seen.details
    done = await run(workspace, "run_command", key="apr_c", argv=[sys.executable, "-c", script])
    assert done.ok and done.output["exit_code"] == 0
    assert done.output["stdout"].split() == [str(workspace.resolve()), "None"]
    slow = await run(
        workspace,
        "run_command",
        key="apr_slow",
        argv=[sys.executable, "-c", "import time; time.sleep(5)"],
        timeout_seconds=0.5,
    )
    assert not slow.ok and slow.output["timed_out"] and "0.5 s limit" in (slow.error or "")
    # An attempt that claimed the approval and died is not repeated.
    marker = workspace / "marker"
    Journal(workspace.resolve(), "apr_died").begin({"tool": "run_command"})
    again = await run(
        workspace,
        "run_command",
        key="apr_died",
        argv=[sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
    )
    assert not again.ok and "not repeated" in (again.error or "") and not marker.exists()


async def test_send_email_goes_to_the_outbox_at_most_once_per_approval(workspace: Path) -> None:
    args = {"to": "ops@example.com, cto@example.com", "subject": "Cleanup", "body": "Done."}
    seen = await preview(workspace, "send_email", **args)
    assert "To: ops@example.com, cto@example.com" in seen.details
    first = await run(workspace, "send_email", key="apr_mail", **args)
    second = await run(workspace, "send_email", key="apr_mail", **args)
    assert first.ok and second == first
    [sent] = list((workspace / "outbox").iterdir())
    message = email.message_from_bytes(sent.read_bytes())
    assert message["Message-ID"] == "<apr_mail@hitl-agents>" and message["Subject"] == "Cleanup"


class _SMTP(socketserver.StreamRequestHandler):
    received: ClassVar[list[bytes]] = []

    def handle(self) -> None:
        self.wfile.write(b"220 test ESMTP\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                type(self).received.append(data)
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


async def test_send_email_over_smtp_when_configured(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTP)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HITL_SMTP_URL", f"smtp://127.0.0.1:{server.server_address[1]}")
        args = {"to": ["ops@example.com"], "subject": "Hello", "body": "From the agent."}
        done = await run(workspace, "send_email", key="apr_smtp", **args)
        await run(workspace, "send_email", key="apr_smtp", **args)
    finally:
        server.shutdown()
        server.server_close()
    assert done.ok and "SMTP 127.0.0.1" in done.summary
    assert len(_SMTP.received) == 1 and b"Subject: Hello" in _SMTP.received[0]
    assert not (workspace / "outbox").exists()


def test_journal_claims_a_key_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "apr/../../evil")
    assert journal.path.parent == tmp_path / JOURNAL_DIR / "actions"
    assert journal.begin({"a": 1}) and not journal.begin({"a": 1})
    journal.finish({"a": 1}, {"ok": True})
    assert journal.read() == {"status": "done", "action": {"a": 1}, "result": {"ok": True}}
    assert not os.path.exists(journal.path.with_suffix(".tmp"))


# --- 1. approved is exactly what was previewed --------------------------------------------


async def test_a_file_that_appears_after_the_preview_is_never_deleted(workspace: Path) -> None:
    late = "logs/late.log"
    seen = await preview(workspace, "delete_files", paths=[OLD_LOGS[0], late])
    (workspace / late).write_text("appeared after the reviewer looked")
    done = await run(
        workspace, "delete_files", key="apr_late", seen=seen, paths=[OLD_LOGS[0], late]
    )
    assert done.output["deleted"] == [OLD_LOGS[0]]
    [kept] = done.output["kept"]
    assert kept["path"] == late and "did not exist when the preview was shown" in kept["reason"]
    assert (workspace / late).exists()


async def test_a_folder_or_special_file_in_the_preview_is_never_deleted_when_a_file_takes_its_place(
    workspace: Path,
) -> None:
    (workspace / "logs/empty").mkdir()
    os.mkfifo(workspace / "logs/pipe")
    seen = await preview(workspace, "delete_files", paths=["logs/empty", "logs/pipe"])
    assert "DIRECTORY" in seen.details and "FIFO" in seen.details
    assert seen.facts["existing"] == 0
    (workspace / "logs/empty").rmdir()
    (workspace / "logs/pipe").unlink()
    for name in ("logs/empty", "logs/pipe"):
        (workspace / name).write_text("a plain file now")
    done = await run(
        workspace, "delete_files", key="apr_dir", seen=seen, paths=["logs/empty", "logs/pipe"]
    )
    assert done.output["deleted"] == [] and len(done.output["kept"]) == 2
    assert all("was refused in the preview" in item["reason"] for item in done.output["kept"])
    assert (workspace / "logs/empty").exists() and (workspace / "logs/pipe").exists()


async def test_a_file_replaced_by_another_with_the_same_size_and_time_is_kept(
    workspace: Path,
) -> None:
    name = OLD_LOGS[0]
    seen = await preview(workspace, "delete_files", paths=[name])
    before = (workspace / name).stat()
    # Moved aside (so its inode stays taken) and a look-alike put in its place.
    (workspace / name).rename(workspace / "logs/moved-aside")
    (workspace / name).write_text("y" * before.st_size)
    os.utime(workspace / name, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = await run(workspace, "delete_files", key="apr_swap", seen=seen, paths=[name])
    assert done.output["kept"] == [
        {"path": name, "reason": "was replaced by another file since the reviewer saw the preview"}
    ]
    assert (workspace / name).read_text() == "y" * before.st_size


async def test_a_file_rewritten_and_touched_back_to_its_old_time_is_kept(workspace: Path) -> None:
    name = OLD_LOGS[0]
    seen = await preview(workspace, "delete_files", paths=[name])
    before = (workspace / name).stat()
    time.sleep(0.01)  # a later change time than the preview's
    (workspace / name).write_text("z" * before.st_size)  # same inode, same size
    os.utime(workspace / name, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = await run(workspace, "delete_files", key="apr_touch", seen=seen, paths=[name])
    assert done.output["kept"] == [
        {"path": name, "reason": "changed since the reviewer saw the preview"}
    ]
    assert (workspace / name).read_text() == "z" * before.st_size


async def test_without_a_preview_nothing_is_deleted(workspace: Path) -> None:
    failed = ToolPreview(summary="delete_files: no preview available", warnings=["boom"])
    for key, seen in (("apr_none", None), ("apr_failed", failed)):
        done = await run(workspace, "delete_files", key=key, seen=seen, paths=OLD_LOGS)
        assert not done.ok and done.output["deleted"] == []
        assert done.output["kept"] == [
            {"path": name, "reason": "no preview was shown for it"} for name in OLD_LOGS
        ]
    assert all(name in files_in(workspace) for name in OLD_LOGS)


async def test_a_path_the_preview_did_not_show_is_not_deleted(workspace: Path) -> None:
    seen = await preview(workspace, "delete_files", paths=OLD_LOGS[:1])
    done = await run(workspace, "delete_files", key="apr_more", seen=seen, paths=OLD_LOGS[:2])
    assert done.output["deleted"] == OLD_LOGS[:1]
    assert done.output["kept"] == [
        {"path": OLD_LOGS[1], "reason": "was not in the preview the reviewer saw"}
    ]


async def test_one_file_named_twice_is_counted_and_deleted_once(workspace: Path) -> None:
    paths = [OLD_LOGS[0], f"./{OLD_LOGS[0]}"]
    seen = await preview(workspace, "delete_files", paths=paths)
    assert seen.summary == "delete 1 file (500 B), 1 not deletable"
    assert f"{paths[1]} is the same file as {paths[0]}" in seen.warnings


async def test_write_file_writes_only_over_what_the_diff_was_computed_against(
    workspace: Path,
) -> None:
    args = {"path": "new/late.toml", "content": "x = 1\n"}
    seen = await preview(workspace, "write_file", **args)
    (workspace / "new").mkdir()
    (workspace / "new/late.toml").write_text("someone else's\n")
    refused = await run(workspace, "write_file", key="apr_wl", seen=seen, **args)
    assert not refused.ok and "was created since the reviewer saw the diff" in (refused.error or "")
    assert (workspace / "new/late.toml").read_text() == "someone else's\n"
    blind = await run(workspace, "write_file", key="apr_wb", **args)
    assert not blind.ok and "no preview was shown for it" in (blind.error or "")
    other = await run(
        workspace, "write_file", key="apr_wo", seen=seen, path=args["path"], content="y"
    )
    assert not other.ok and "the preview was for other arguments" in (other.error or "")
    assert (workspace / "new/late.toml").read_text() == "someone else's\n"


async def test_write_file_never_writes_through_a_symlink(workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("x" * 50)
    args = {"path": "config/app.yaml", "content": "a: 1\n"}
    seen = await preview(workspace, "write_file", **args)
    # Swapped for a link to a file with the very content the diff was computed against.
    (workspace / "config/app.yaml").unlink()
    (workspace / "config/app.yaml").symlink_to(outside)
    refused = await run(workspace, "write_file", key="apr_ws", seen=seen, **args)
    assert not refused.ok and "never writes through a symlink" in (refused.error or "")
    assert outside.read_text() == "x" * 50
    linked = await preview(workspace, "write_file", **args)
    assert linked.summary == "write_file: cannot be carried out as asked"
    assert "symbolic link" in linked.warnings[0]


# --- 2. the journal is unreachable ---------------------------------------------------------


async def test_the_journal_is_unreachable_through_a_symlinked_folder(workspace: Path) -> None:
    Journal(workspace, "apr_old").begin({"tool": "run_command"})
    entry = workspace / JOURNAL_DIR / "actions" / "apr_old.json"
    before = entry.read_bytes()
    (workspace / "j").symlink_to(JOURNAL_DIR)
    (workspace / "up").symlink_to(".")
    (workspace / "logs/abs").symlink_to(workspace / JOURNAL_DIR / "actions")
    tricks = [
        "j/actions/apr_old.json",
        "up/.hitl/actions/apr_old.json",
        "logs/abs/apr_old.json",
        "./.hitl/actions/apr_old.json",
        ".HITL/actions/apr_old.json",
        ".hitl./actions/apr_old.json",
        ".hitl\\actions\\apr_old.json",
    ]
    for path in tricks:
        read = await run(workspace, "read_file", path=path)
        assert not read.ok and read.output is None, path
        assert "symbolic link" in (read.error or "") or "reserve" in (read.error or ""), path
        write_preview = await preview(workspace, "write_file", path=path, content="{}")
        assert write_preview.summary == "write_file: cannot be carried out as asked", path
        written = await run(
            workspace, "write_file", key="apr_jw", seen=write_preview, path=path, content="{}"
        )
        assert not written.ok, path
    seen = await preview(workspace, "delete_files", paths=tricks)
    assert seen.facts["existing"] == 0 and seen.details.count("REFUSED") == len(tricks)
    deleted = await run(workspace, "delete_files", key="apr_jd", seen=seen, paths=tricks)
    assert deleted.output["deleted"] == []
    assert entry.read_bytes() == before


async def test_find_files_never_lists_the_journal(workspace: Path) -> None:
    Journal(workspace, "apr_old").begin({"tool": "run_command"})
    (workspace / "j").symlink_to(JOURNAL_DIR)
    for pattern in ("*", "*.json", "**/*.json", ".hitl/**", ".hitl/actions/*", "j/**/*", "**"):
        found = await run(workspace, "find_files", pattern=pattern)
        names = [item["path"] for item in found.output["files"]]
        assert not [name for name in names if "hitl" in name or name.startswith("j/")], pattern


# --- 3. no symlink is followed ----------------------------------------------------------


async def test_a_symlink_swapped_in_after_the_preview_cannot_redirect_a_delete(
    workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "nested").mkdir(parents=True)
    name = OLD_LOGS[2]  # logs/nested/db-old.log
    os.link(workspace / name, outside / "nested/db-old.log")  # same file, same stamp
    (outside / "keep.log").write_text("outside")
    seen = await preview(workspace, "delete_files", paths=[name, OLD_LOGS[0]])
    (workspace / "logs").rename(workspace / "logs-moved")
    (workspace / "logs").symlink_to(outside)
    os.symlink(outside / "keep.log", workspace / "logs-moved" / "swap.log")
    done = await run(workspace, "delete_files", key="apr_sw", seen=seen, paths=[name, OLD_LOGS[0]])
    assert done.output["deleted"] == []
    assert all("symbolic link" in item["reason"] for item in done.output["kept"])
    assert (outside / "nested/db-old.log").exists() and (outside / "keep.log").exists()


async def test_deleting_a_symlink_keeps_the_link_and_its_target(workspace: Path) -> None:
    (workspace / "logs/link.log").symlink_to("app-today.log")
    seen = await preview(workspace, "delete_files", paths=["logs/link.log"])
    assert "SYMLINK" in seen.details and seen.facts["existing"] == 0
    assert "logs/link.log is a symbolic link; only regular files are deleted" in seen.warnings
    done = await run(workspace, "delete_files", key="apr_l", seen=seen, paths=["logs/link.log"])
    assert done.output["deleted"] == [] and len(done.output["kept"]) == 1
    assert (workspace / "logs/link.log").is_symlink() and (
        workspace / "logs/app-today.log"
    ).exists()
    read = await run(workspace, "read_file", path="logs/link.log")
    assert not read.ok and "the tools never follow symbolic links" in (read.error or "")


# --- 4. special files and odd names --------------------------------------------------------


async def test_reading_a_fifo_does_not_hang(workspace: Path) -> None:
    os.mkfifo(workspace / "logs/pipe.log")
    result = await asyncio.wait_for(run(workspace, "read_file", path="logs/pipe.log"), 10)
    assert not result.ok and "is a FIFO (named pipe)" in (result.error or "")
    found = await run(workspace, "find_files", pattern="*.log")
    assert "logs/pipe.log" not in [item["path"] for item in found.output["files"]]


async def test_a_socket_is_flagged_in_the_preview_and_never_deleted(workspace: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(workspace)  # a relative bind keeps the address short
    try:
        server.bind("logs/s.sock")
    finally:
        os.chdir(cwd)
    try:
        seen = await preview(workspace, "delete_files", paths=["logs/s.sock"])
        assert "SOCKET" in seen.details and "logs/s.sock is a socket" in seen.warnings[0]
        done = await run(workspace, "delete_files", key="apr_s", seen=seen, paths=["logs/s.sock"])
        assert done.output["deleted"] == [] and (workspace / "logs/s.sock").exists()
        write = await preview(workspace, "write_file", path="logs/s.sock", content="x")
        assert "is a socket" in write.warnings[0]
    finally:
        server.close()


async def test_names_with_control_characters_are_data_but_always_shown_quoted(
    workspace: Path,
) -> None:
    names = ["logs/a.log\nb.log", "logs/\u202egol.exe", "logs/\x1b[2Jclear.log"]
    for name in names:
        (workspace / name).write_text("odd")
    seen = await preview(workspace, "delete_files", paths=[*names, "logs/missing\r.log"])
    for text in [seen.summary, seen.details, *seen.warnings]:
        assert visible(text, multiline=True) == text
        assert "\u202e" not in text and "\x1b" not in text and "\r" not in text
    for name in names:
        assert quoted(name) in seen.details
    assert seen.details.count("\n") == len(names) + 1  # one line per entry and the header
    assert f"{quoted('logs/missing' + chr(13) + '.log')} does not exist" in seen.warnings
    found = await run(workspace, "find_files", pattern="logs/*")
    assert set(names) <= {item["path"] for item in found.output["files"]}
    done = await run(workspace, "delete_files", key="apr_odd", seen=seen, paths=names)
    assert done.output["deleted"] == names


# --- 5. bounds -----------------------------------------------------------------------------


async def test_delete_takes_at_most_200_paths_and_says_to_split_the_work(workspace: Path) -> None:
    paths = [f"logs/{index}.log" for index in range(201)]
    with pytest.raises(ValidationError, match="split the deletion into several calls"):
        DeleteFilesArgs(paths=paths)
    refused = await run(workspace, "delete_files", key="apr_many", paths=paths)
    assert not refused.ok
    assert "at most 200 paths per call; split the deletion into several calls" in (
        refused.error or ""
    )
    DeleteFilesArgs(paths=paths[:200])


@pytest.mark.parametrize(
    ("model", "args", "message"),
    [
        (ReadFileArgs, {"path": "x" * 4097}, "paths are at most 4,096 characters"),
        (WriteFileArgs, {"path": "a", "content": "x" * (256 * 1024 + 1)}, "write a smaller file"),
        (RunCommandArgs, {"argv": ["echo"] * 65}, "split the work into several commands"),
        (RunCommandArgs, {"argv": ["echo", "x" * 4097]}, "put long input in a file"),
        (RunCommandArgs, {"argv": ["echo", "a\x00b"]}, "NUL character"),
        (RunCommandArgs, {"argv": [""]}, "name the program to run"),
        (SendEmailArgs, {"to": "a@b.co", "subject": "s", "body": "é" * 40000}, "shorten it"),
        (SendEmailArgs, {"to": "a@b.co", "subject": "s" * 201, "body": ""}, "shorten it"),
        (SendEmailArgs, {"to": ["a@b.co"] * 51, "subject": "s", "body": ""}, "send several"),
        (FindFilesArgs, {"pattern": "*" * 4097}, "paths are at most 4,096 characters"),
    ],
)
def test_arguments_are_bounded_with_a_message_that_says_what_to_do(
    model: type, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        model(**args)


async def test_previews_stay_bounded_whatever_the_workspace_holds(workspace: Path) -> None:
    paths = [f"logs/{index:03}-{'n' * 240}.log" for index in range(200)]
    for name in paths[:100]:
        (workspace / name).write_text("x")
    seen = await preview(workspace, "delete_files", paths=paths)
    assert len(seen.details) <= 16 * 1024 and "more characters not shown" in seen.details
    assert len(seen.summary) <= 200
    assert len(seen.warnings) == 20 and "81 more warnings" in seen.warnings[-1]
    assert all(len(warning) <= 300 for warning in seen.warnings)
    assert len(seen.facts["files"]) == 200  # execution still knows every entry
    long_name = "logs/" + "\n" * 3000
    odd = await preview(workspace, "write_file", path=long_name, content="x\n" * 100_000)
    assert len(odd.summary) <= 200 and len(odd.details) <= 16 * 1024


async def test_command_output_is_bounded(workspace: Path) -> None:
    script = "import sys; sys.stdout.write('x' * 1_000_000)"
    done = await run(workspace, "run_command", key="apr_big", argv=[sys.executable, "-c", script])
    assert done.ok and len(done.output["stdout"]) < 33 * 1024
    assert "more bytes not shown" in done.output["stdout"]


# --- 6. risk says what runs ----------------------------------------------------------------


def _risk(*argv: str) -> int:
    return REGISTRY["run_command"].score(RunCommandArgs(argv=list(argv)), ToolPreview(summary=""))


@pytest.mark.parametrize(
    "argv",
    [
        ["bash", "-c", "echo hi"],
        ["/usr/bin/bash", "script.sh"],
        ["python3", "-c", "print(1)"],
        ["python3.11", "-c", "print(1)"],
        ["/usr/local/bin/python3.12", "tool.py"],
        ["pypy3", "-m", "http.server"],
        ["perl", "-e", "unlink glob '*'"],
        ["ruby", "-e", "1"],
        ["node", "-e", "1"],
        ["php8.2", "-r", "1;"],
        ["lua5.4", "-e", "1"],
        ["awk", 'BEGIN { system("rm x") }'],
        ["osascript", "-e", "1"],
        ["pwsh", "-Command", "1"],
        ["tclsh8.6", "x.tcl"],
        ["busybox", "rm", "x"],
        ["dash"],
        ["fish", "-c", "x"],
        ["env", "VAR=1", "bash", "-c", "x"],
        ["timeout", "5", "sh", "-c", "x"],
        ["nice", "-n", "5", "python", "-c", "x"],
        ["xargs", "rm"],
        ["nohup", "ls"],
        ["find", ".", "-delete"],
        ["find", ".", "-exec", "ls", "{}", ";"],
        ["BASH.EXE", "-c", "x"],
    ],
)
def test_interpreters_with_inline_code_score_as_high_as_sh(argv: list[str]) -> None:
    assert _risk(*argv) >= _risk("sh", "-c", "echo hi") >= 95


def test_wrappers_are_looked_through_to_what_they_run() -> None:
    assert _risk("sudo", "ls") == 100
    assert _risk("timeout", "-s", "KILL", "5", "sudo", "rm", "x") == 100
    assert _risk("env", "-i", "doas", "sh") == 100
    assert _risk("bash", "-c", "sudo rm -rf /tmp/x") == 100
    assert _risk("find", ".", "-exec", "sudo", "rm", "{}", ";") == 100


async def test_read_only_programs_and_version_queries_score_lower_than_a_shell(
    workspace: Path,
) -> None:
    # Through the check activity, whose preview resolves the program and the paths: a
    # read-only program scores low only with that in hand (tests/test_command_risk.py).
    shell = _risk("sh", "-c", "x")
    for argv in (["ls", "-l"], ["python3", "--version"], ["grep", "sh", "config/app.yaml"]):
        request = ToolCheckRequest(
            tool="run_command", args={"argv": argv}, workspace=str(workspace)
        )
        check = await in_process().run(TOOLS.check_tool, request)
        assert check.risk < shell, argv


async def test_the_command_preview_says_plainly_that_commands_are_not_confined(
    workspace: Path,
) -> None:
    seen = await preview(workspace, "run_command", argv=["ls", "-l"])
    assert "NOT confined to the workspace" in seen.details
    assert "worker's own permissions" in seen.details
    assert any("NOT confined" in warning for warning in seen.warnings)
    assert seen.facts["confined"] is False


async def test_command_arguments_are_shown_unambiguously(workspace: Path) -> None:
    seen = await preview(workspace, "run_command", argv=["echo", "a\nb", "a\\nb", "plain"])
    assert 'echo "a\\nb" "a\\\\nb" plain' in seen.details


async def test_a_command_that_reads_stdin_does_not_wait_for_the_worker_terminal(
    workspace: Path,
) -> None:
    script = "import sys; print(len(sys.stdin.read()))"
    done = await asyncio.wait_for(
        run(workspace, "run_command", key="apr_in", argv=[sys.executable, "-c", script]), 20
    )
    assert done.ok and done.output["stdout"].strip() == "0"


# --- 7. email and failures after approval --------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["Hi\r\nBcc: everyone@example.com", "Hi\nthere", "a\x00b", "bell\x07", "a\u2028b"]
)
async def test_an_email_subject_with_a_line_break_is_refused_up_front(
    workspace: Path, subject: str
) -> None:
    with pytest.raises(ValidationError, match="write it as one line of plain text"):
        SendEmailArgs(to="ops@example.com", subject=subject, body="b")
    seen = await preview(workspace, "send_email", to="ops@example.com", subject=subject, body="b")
    assert "invalid arguments for send_email" in seen.warnings[0]
    sent = await run(
        workspace, "send_email", key="apr_subj", to="ops@example.com", subject=subject, body="b"
    )
    assert not sent.ok and "one line of plain text" in (sent.error or "")
    assert not (workspace / "outbox").exists()


@pytest.mark.parametrize("address", ["a\x00b@example.com", "a@exam\rple.com", "x" * 250 + "@b.co"])
def test_an_email_address_with_control_characters_is_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="not an email address"):
        SendEmailArgs(to=[address], subject="s", body="b")


async def test_a_tool_that_fails_after_approval_says_what_failed(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    monkeypatch.setenv("HITL_SMTP_URL", f"smtp://127.0.0.1:{port}")
    args = {"to": ["ops@example.com"], "subject": "Hello", "body": "b"}
    first = await run(workspace, "send_email", key="apr_refused", **args)
    assert not first.ok and "ConnectionRefusedError" in (first.error or "")
    assert "worker may have died" not in (first.error or "")
    # Temporal's retry of the same approval reports the same failure, and sends nothing.
    again = await run(workspace, "send_email", key="apr_refused", **args)
    assert again == first


async def test_an_idempotent_tool_that_fails_unexpectedly_raises_its_own_error(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @tool(read_only=True)
    def flaky(ctx: ToolContext) -> None:
        """Fails the way a disk does."""
        raise OSError(5, "Input/output error")

    flaky_tools = ToolActivities(ToolRegistry([flaky]))
    request = ToolRequest(
        action=ToolAction(tool="flaky", args={}), workspace=str(workspace), idempotency_key="apr_io"
    )
    with pytest.raises(OSError, match="Input/output error"):
        await in_process().run(flaky_tools.run_tool, request)
    # The claim was released, so Temporal's retry may run it again.
    assert Journal(workspace, "apr_io").read() is None


# --- 8. what a standing approval covers comes from the tool --------------------------------


def _transfer(**options: Any) -> Any:
    @tool(requires_approval=True, **options)
    def transfer(account: str, amount: float) -> str:
        """Move money."""
        return "moved"

    return transfer


async def _check(item: Any, **args: Any) -> ToolCheck:
    activities = ToolActivities(ToolRegistry([item]))
    request = ToolCheckRequest(tool=item.name, args=args)
    return await in_process().run(activities.check_tool, request)


async def test_a_standing_scope_that_fails_covers_no_call_and_says_so() -> None:
    def broken(args: Any) -> str:
        raise KeyError("account")

    item = _transfer(standing_scope=broken)
    first = await _check(item, account="acme", amount=5)
    second = await _check(item, account="acme", amount=5)
    assert first.scope_key and second.scope_key
    assert first.scope_key.startswith("!error") and first.scope_key != second.scope_key
    assert first.preview is not None
    assert any("no standing approval covers this call" in w for w in first.preview.warnings)
    not_text = await _check(_transfer(standing_scope=lambda args: None), account="a", amount=1)
    assert not_text.scope_key and not_text.scope_key.startswith("!error")
    # A rule that answers the marker itself is checked like any other call.
    marker = await _check(_transfer(standing_scope=lambda args: "!error"), account="a", amount=1)
    assert marker.ok and marker.needs_approval


async def test_a_standing_scope_is_bounded_and_stays_distinct() -> None:
    item = _transfer(standing_scope=lambda args: args.account)
    assert (await _check(item, account="acme", amount=5)).scope_key == "acme"
    one = await _check(item, account="x" * 5000 + "1", amount=5)
    two = await _check(item, account="x" * 5000 + "2", amount=5)
    assert one.scope_key and two.scope_key and one.scope_key != two.scope_key
    assert len(one.scope_key) <= 256


def test_a_standing_scope_is_a_rule_outside_the_tool_s_digest() -> None:
    plain, scoped = _transfer(), _transfer(standing_scope=lambda args: args.account)
    # Like `risk`, it runs in the check activity: changing it doesn't change the tool a
    # paused run recorded.
    assert plain.descriptor().digest == scoped.descriptor().digest
    assert plain.scope_key(plain.validate({"account": "a", "amount": 1})) is None
    with pytest.raises(ToolRegistrationError, match="standing_scope"):
        _transfer(standing_scope="account")
