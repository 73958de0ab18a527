"""The tools' activities on real files: confinement, previews, idempotency, at-most-once."""

from __future__ import annotations

import email
import os
import socketserver
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment

from activities.tools import preview_tool, run_tool
from activities.workspace import JOURNAL_DIR, Journal
from hitl.models import ToolAction, ToolPreview, ToolRequest, ToolResult
from hitl.tools import (
    REGISTRY,
    DeleteFilesArgs,
    FindFilesArgs,
    ReadFileArgs,
    RunCommandArgs,
    SendEmailArgs,
    WriteFileArgs,
)
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in


async def preview(workspace: Path, tool: str, **args: Any) -> ToolPreview:
    request = ToolRequest(action=ToolAction(tool=tool, args=args), workspace=str(workspace))
    return await ActivityEnvironment().run(preview_tool, request)


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
    return await ActivityEnvironment().run(run_tool, request)


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


# --- risk says what runs ----------------------------------------------------------------


def _risk(*argv: str) -> int:
    spec = REGISTRY["run_command"]
    return spec.risk(RunCommandArgs(argv=list(argv)), ToolPreview(summary=""))


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


def test_plain_programs_and_version_queries_score_lower_than_a_shell() -> None:
    shell = _risk("sh", "-c", "x")
    for argv in (["ls", "-l"], ["git", "status"], ["python3", "--version"], ["grep", "sh", "f"]):
        assert _risk(*argv) < shell, argv


# --- arguments are bounded and header values are one line ---------------------------------


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


@pytest.mark.parametrize("address", ["a\x00b@example.com", "a@exam\rple.com", "x" * 250 + "@b.co"])
def test_an_email_address_with_control_characters_is_refused(address: str) -> None:
    with pytest.raises(ValidationError, match="not an email address"):
        SendEmailArgs(to=[address], subject="s", body="b")


@pytest.mark.parametrize(
    "subject", ["Hi\r\nBcc: everyone@example.com", "Hi\nthere", "a\x00b", "bell\x07", "a\u2028b"]
)
def test_an_email_subject_with_a_line_break_is_refused_by_validation(subject: str) -> None:
    with pytest.raises(ValidationError, match="write it as one line of plain text"):
        SendEmailArgs(to="ops@example.com", subject=subject, body="b")


def test_delete_takes_at_most_200_paths_and_says_to_split(workspace: Path) -> None:
    paths = [f"logs/{index}.log" for index in range(201)]
    with pytest.raises(ValidationError, match="split the deletion into several calls"):
        DeleteFilesArgs(paths=paths)
    DeleteFilesArgs(paths=paths[:200])
