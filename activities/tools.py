"""The tools' implementations and their dry runs, behind three activities.

`preview_tool` says what an action would change, `run_tool` does it, and
`notify_approval` tells reviewers an approval waits. Each tool is one entry in
`IMPLEMENTATIONS`; the specs (flags, risk, schemas) live in `hitl/tools.py`.
"""

from __future__ import annotations

import asyncio
import difflib
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import structlog
from pydantic import ValidationError
from temporalio import activity

from activities.heartbeat import heartbeating
from activities.workspace import (
    JOURNAL_DIR,
    Entry,
    Journal,
    ToolInputError,
    Workspace,
    describe,
    split_path,
)
from hitl import contract
from hitl.models import ApprovalRecord, ToolPreview, ToolRequest, ToolResult
from hitl.policy import format_validation_error
from hitl.secrets import redact_model, secrets_in
from hitl.text import clip, clip_bytes, quoted, visible
from hitl.tools import (
    REGISTRY,
    DeleteFilesArgs,
    FindFilesArgs,
    ReadFileArgs,
    RunCommandArgs,
    SendEmailArgs,
    ToolSpec,
    WriteFileArgs,
)

log = structlog.get_logger("hitl.tools")

MAX_FIND_RESULTS = 1000
MAX_READ_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 32 * 1024
MAX_DIFF_LINES = 400
MAX_DIFF_SOURCE_BYTES = 1024 * 1024
"""A larger file is still checked by hash before it is replaced, but not diffed."""
MAX_SUMMARY_CHARS = 200
MAX_DETAILS_CHARS = 16 * 1024
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 300
MAX_ERROR_CHARS = 2000
_NO_PREVIEW = "no preview was shown for it"


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _mtime(entry: Entry) -> str:
    return datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC).isoformat(timespec="seconds")


def _age_days(entry: Entry) -> float:
    return round((time.time() - entry.mtime_ns / 1e9) / 86400, 1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Call:
    """What an implementation needs besides its arguments."""

    workspace: Workspace
    """The run's workspace, open; every file access goes through it."""
    key: str | None = None
    """The approval id: the idempotency key of an approved action."""
    facts: dict[str, Any] = field(default_factory=dict)
    """The facts of the preview the reviewer saw, to refuse what changed since."""

    @property
    def root(self) -> Path:
        return self.workspace.path


# --- find_files and read_file (read-only) -----------------------------------------------


def _glob(pattern: str) -> Callable[[str], bool]:
    """A matcher of relative paths, with pathlib's glob rules ('**' spans folders).

    A bare name pattern matches at any depth, as users of `find -name` expect.
    """
    parts = [part for part in pattern.replace("\\", "/").split("/") if part not in ("", ".")]
    if "/" not in pattern.replace("\\", "/"):
        return lambda relative: fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], pattern)

    def spans(states: set[int]) -> set[int]:
        # '**' may also match no folder at all.
        grown = set(states)
        for index in sorted(states):
            while index < len(parts) and parts[index] == "**":
                index += 1
                grown.add(index)
        return grown

    def match(relative: str) -> bool:
        states = spans({0})
        for name in relative.split("/"):
            following = set()
            for index in states:
                if index == len(parts):
                    continue
                if parts[index] == "**":
                    following.add(index)
                elif fnmatch.fnmatchcase(name, parts[index]):
                    following.add(index + 1)
            states = spans(following)
            if not states:
                return False
        return len(parts) in states

    return match


def find_files(call: Call, args: FindFilesArgs) -> ToolResult:
    pattern = args.pattern.strip() or "*"
    if "\x00" in pattern:
        raise ToolInputError("the pattern contains a NUL character; remove it")
    if pattern.startswith(("/", "\\", "~")) or ".." in pattern.replace("\\", "/").split("/"):
        raise ToolInputError(
            f"pattern {quoted(args.pattern)} must stay inside the workspace: "
            "no absolute path, '~' or '..'"
        )
    matches = _glob(pattern)
    cutoff = time.time() - args.older_than_days * 86400 if args.older_than_days else None
    walk = call.workspace.walk()
    found = []
    for relative, entry in walk:
        # Only regular files: a link is not followed and a FIFO or device is no file to
        # read or delete.
        if entry.kind != "file" or not matches(relative):
            continue
        if cutoff is not None and entry.mtime_ns / 1e9 >= cutoff:
            continue
        found.append(
            {
                "path": relative,
                "size": entry.size,
                "modified": _mtime(entry),
                "age_days": _age_days(entry),
            }
        )
    truncated = len(found) > MAX_FIND_RESULTS or walk.truncated
    output: dict[str, Any] = {"files": found[:MAX_FIND_RESULTS], "truncated": truncated}
    if walk.truncated:
        output["note"] = (
            f"the search stopped after {walk.visited:,} entries; narrow the pattern to a folder"
        )
    if walk.unlisted:
        output["unlisted"] = f"{walk.unlisted} names are not valid UTF-8 and are not listed"
    age = f" older than {args.older_than_days:g} days" if args.older_than_days else ""
    return ToolResult(
        ok=True,
        output=output,
        summary=f"found {_plural(len(found), 'file')} matching {quoted(pattern)}{age}",
    )


def read_file(call: Call, args: ReadFileArgs) -> ToolResult:
    contents = call.workspace.read(args.path, MAX_READ_BYTES)
    size = contents.entry.size
    return ToolResult(
        ok=True,
        output={
            "path": args.path,
            "content": contents.data.decode("utf-8", errors="replace"),
            "truncated": size > len(contents.data),
        },
        summary=f"read {quoted(args.path)} ({_size(size)})",
    )


# --- delete_files -----------------------------------------------------------------------

_LABELS = {
    "directory": "DIRECTORY",
    "symlink": "SYMLINK",
    "fifo": "FIFO",
    "socket": "SOCKET",
    "char_device": "DEVICE",
    "block_device": "DEVICE",
    "other": "SPECIAL",
}


def preview_delete(workspace: Workspace, args: DeleteFilesArgs) -> ToolPreview:
    """The files that would go, with what identifies each, and what won't and why.

    The facts record every regular file's identity and content stamp: execution deletes
    exactly those, unchanged, and nothing else.
    """
    files: list[dict[str, Any]] = []
    lines, warnings = [], []
    total = 0
    seen: dict[tuple[int, int], str] = {}

    def blank(label: str, name: str) -> str:
        return f"  {label:>9}  {'':19}  {'':>8}  {quoted(name)}"

    for name in args.paths:
        try:
            entry = workspace.stat(name)
        except ToolInputError as error:
            files.append({"path": name, "exists": False, "refused": str(error)})
            warnings.append(f"refused: {error}")
            lines.append(blank("REFUSED", name))
            continue
        if entry is None:
            files.append({"path": name, "exists": False, "kind": None})
            warnings.append(f"{quoted(name)} does not exist")
            lines.append(blank("MISSING", name))
            continue
        if entry.kind != "file":
            why = f"is {describe(entry.kind)}; only regular files are deleted"
            files.append({"path": name, "exists": True, "kind": entry.kind, "refused": why})
            warnings.append(f"{quoted(name)} {why}")
            lines.append(blank(_LABELS.get(entry.kind, "SPECIAL"), name))
            continue
        if (entry.dev, entry.ino) in seen:
            why = f"is the same file as {quoted(seen[entry.dev, entry.ino])}"
            files.append({"path": name, "exists": True, "kind": "file", "refused": why})
            warnings.append(f"{quoted(name)} {why}")
            lines.append(blank("SAME FILE", name))
            continue
        seen[entry.dev, entry.ino] = name
        total += entry.size
        files.append(
            {
                "path": name,
                "exists": True,
                "kind": "file",
                "deletable": True,
                **entry.stamp(),
                "modified": _mtime(entry),
                "age_days": _age_days(entry),
            }
        )
        lines.append(
            f"  {_size(entry.size):>9}  {_mtime(entry)[:19].replace('T', ' ')}  "
            f"{_age_days(entry):>6} d  {quoted(name)}"
        )
    existing = sum(1 for item in files if item.get("deletable"))
    summary = f"delete {_plural(existing, 'file')} ({_size(total)})"
    if len(files) != existing:
        summary += f", {len(files) - existing} not deletable"
    header = f"  {'size':>9}  {'modified (UTC)':19}  {'age':>8}  path"
    return ToolPreview(
        summary=summary,
        details="\n".join([header, *lines]),
        facts={"files": files, "existing": existing, "total_bytes": total},
        warnings=warnings,
    )


def _previewed_file(fact: dict[str, Any] | None) -> str | None:
    """Why a preview entry may not be deleted, or None if it was an existing regular file."""
    if fact is None:
        return "was not in the preview the reviewer saw"
    if fact.get("refused"):
        return f"was refused in the preview: {fact['refused']}"
    if not fact.get("exists"):
        return "did not exist when the preview was shown; a file that appears later is not deleted"
    # Previews recorded before `kind` was kept listed only regular files as existing.
    if fact.get("kind", "file") != "file":
        return (
            f"was {describe(str(fact.get('kind')))} in the preview; only regular files are deleted"
        )
    return None


def delete_files(call: Call, args: DeleteFilesArgs) -> ToolResult:
    """Deletes exactly the regular files the preview showed, each only if unchanged.

    Anything else is kept, with the reason: a path the preview showed as missing,
    refused, a folder or a special file (even if a file is there now), a file replaced
    or changed since, and everything when there was no preview.
    """
    previewed = call.facts.get("files")
    deleted: list[str] = []
    absent: list[str] = []
    kept: list[dict[str, str]] = []
    if not isinstance(previewed, list):
        kept = [{"path": name, "reason": _NO_PREVIEW} for name in args.paths]
    else:
        facts = {item.get("path"): item for item in previewed if isinstance(item, dict)}
        for name in args.paths:
            fact = facts.get(name)
            reason = _previewed_file(fact)
            if reason is None:
                assert fact is not None
                try:
                    outcome = call.workspace.unlink_if_unchanged(name, fact)
                except ToolInputError as error:
                    reason = str(error)
                else:
                    (deleted if outcome == "deleted" else absent).append(name)
                    continue
            kept.append({"path": name, "reason": reason})
    summary = f"deleted {_plural(len(deleted), 'file')}"
    if absent:
        summary += f", {len(absent)} already absent"
    if kept:
        summary += f", kept {len(kept)}"
    return ToolResult(
        ok=not kept,
        output={"deleted": deleted, "already_absent": absent, "kept": kept},
        error=None if not kept else f"{len(kept)} of the approved files were not deleted",
        summary=summary,
    )


# --- write_file -------------------------------------------------------------------------


def preview_write(workspace: Workspace, args: WriteFileArgs) -> ToolPreview:
    new = args.content.encode()
    entry = workspace.stat(args.path)
    if entry is not None and entry.kind == "directory":
        raise ToolInputError(f"{quoted(args.path)} is a folder; give the path of a file")
    old, old_sha256 = b"", None
    if entry is not None:
        # Refuses links and special files; the hash covers the whole file.
        contents = workspace.read(args.path, MAX_DIFF_SOURCE_BYTES, digest=True)
        old, old_sha256, entry = contents.data, contents.sha256, contents.entry
    exists = entry is not None
    if exists and entry is not None and entry.size > len(old):
        details = (
            f"{quoted(args.path)} has {_size(entry.size)}, too large to show as a diff; "
            f"it would be replaced by {_size(len(new))} of new content"
        )
        added = removed = 0
    else:
        diff = list(
            difflib.unified_diff(
                old.decode("utf-8", errors="replace").splitlines(keepends=True),
                args.content.splitlines(keepends=True),
                fromfile=quoted(f"a/{args.path}") if exists else "/dev/null",
                tofile=quoted(f"b/{args.path}"),
            )
        )
        details = "".join(diff[:MAX_DIFF_LINES])
        if len(diff) > MAX_DIFF_LINES:
            details += f"\n... {len(diff) - MAX_DIFF_LINES} more diff lines\n"
        details = details or "(no change: the file already has this content)"
        added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
    verb = "overwrite" if exists else "create"
    return ToolPreview(
        summary=f"{verb} {quoted(args.path)} (+{added} -{removed} lines)",
        details=details,
        facts={
            "path": args.path,
            "exists": exists,
            "old_sha256": old_sha256,
            "old_bytes": entry.size if entry is not None else None,
            "new_sha256": _sha256(new),
            "new_bytes": len(new),
        },
    )


def write_file(call: Call, args: WriteFileArgs) -> ToolResult:
    """Writes only over exactly the content the diff was computed against."""
    facts, new = call.facts, args.content.encode()
    if "exists" not in facts:
        raise ToolInputError(
            f"{quoted(args.path)} not written: {_NO_PREVIEW}, so no one saw the diff; "
            "propose it again"
        )
    if facts.get("path", args.path) != args.path or facts.get("new_sha256", _sha256(new)) != (
        _sha256(new)
    ):
        raise ToolInputError(
            f"{quoted(args.path)} not written: the preview was for other arguments"
        )
    expected = facts.get("old_sha256") if facts.get("exists") else None
    outcome = call.workspace.write_atomic(args.path, new, expected_sha256=expected)
    return ToolResult(
        ok=True,
        output={"path": args.path, "bytes": len(new), "unchanged": outcome == "unchanged"},
        summary=f"wrote {quoted(args.path)} ({_size(len(new))})",
    )


# --- run_command ------------------------------------------------------------------------

_NOT_CONFINED = (
    "NOT confined to the workspace: the command runs with the worker's own permissions "
    "and can read, change or delete anything the worker can, inside or outside the "
    "workspace; the workspace is only its starting folder"
)


def _command_line(argv: list[str]) -> str:
    return " ".join(quoted(arg) for arg in argv)


def preview_command(workspace: Workspace, args: RunCommandArgs) -> ToolPreview:
    program = (
        shutil.which(args.argv[0], path=os.environ.get("PATH"))
        if "/" not in args.argv[0]
        else args.argv[0]
    )
    warnings = [_NOT_CONFINED]
    if not program:
        warnings.append(f"program {quoted(args.argv[0])} was not found on the worker")
    return ToolPreview(
        summary=f"run {_command_line(args.argv)}",
        details=(
            f"command:  {_command_line(args.argv)}\n"
            f"program:  {quoted(program) if program else 'not found'}\n"
            f"starts in: {quoted(str(workspace.path))}\n"
            f"limit:    {args.timeout_seconds:g} s\n"
            f"{_NOT_CONFINED}."
        ),
        facts={"program": program, "argv": args.argv, "confined": False},
        warnings=warnings,
    )


def _output(handle: Any) -> str:
    handle.seek(0)
    data = handle.read(MAX_OUTPUT_BYTES + 1)
    size = os.fstat(handle.fileno()).st_size
    text = clip_bytes(data[:MAX_OUTPUT_BYTES], MAX_OUTPUT_BYTES)
    if size > MAX_OUTPUT_BYTES:
        text += f"\n[... {size - MAX_OUTPUT_BYTES:,} more bytes not shown]"
    return text


def run_command(call: Call, args: RunCommandArgs) -> ToolResult:
    # The child gets no secret the worker holds; it can still read the worker's own
    # environment (/proc/PPID/environ), so results are redacted too, and commands are best
    # run on a worker that holds no secrets at all (docs/secrets.md).
    secret = {name for name, _ in secrets_in(os.environ)}
    env = {name: value for name, value in os.environ.items() if name not in secret}
    # Output goes to files, not pipes: memory stays bounded whatever the command prints,
    # and a background child that keeps a pipe open can't hang the activity.
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            process = subprocess.Popen(
                args.argv,
                cwd=call.workspace.path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as error:
            # Nothing ran, so the approval's claim may be released.
            raise ToolInputError(
                f"program {quoted(args.argv[0])} could not be started: "
                f"{error.strerror or error}; check its name and that it is executable"
            ) from error
        try:
            code: int | None = process.wait(timeout=args.timeout_seconds)
        except subprocess.TimeoutExpired:
            # The whole session: children of a shell die with it.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                process.kill()
            process.wait()
            code = None
        if code is None:
            return ToolResult(
                ok=False,
                output={
                    "exit_code": None,
                    "timed_out": True,
                    "stdout": _output(stdout),
                    "stderr": _output(stderr),
                },
                error=f"the command ran past its {args.timeout_seconds:g} s limit and was killed",
                summary=clip(f"{_command_line(args.argv)} timed out", MAX_SUMMARY_CHARS),
            )
        return ToolResult(
            ok=code == 0,
            output={
                "exit_code": code,
                "timed_out": False,
                "stdout": _output(stdout),
                "stderr": _output(stderr),
            },
            error=None if code == 0 else f"exit code {code}",
            summary=clip(f"{_command_line(args.argv)} exited {code}", MAX_SUMMARY_CHARS),
        )


# --- send_email -------------------------------------------------------------------------


def _sender() -> str:
    return os.environ.get("HITL_EMAIL_FROM", "hitl-agent@localhost")


def _message(args: SendEmailArgs, key: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = _sender()
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject
    if key:
        # Receivers that dedupe on Message-ID see one message per approval.
        message["Message-ID"] = f"<{key}@hitl-agents>"
    message.set_content(args.body)
    return message


def preview_email(workspace: Workspace, args: SendEmailArgs) -> ToolPreview:
    smtp = os.environ.get("HITL_SMTP_URL")
    where = (
        f"SMTP {quoted(urlparse(smtp).hostname or '?')}"
        if smtp
        else "the workspace's outbox/ (no SMTP)"
    )
    to = ", ".join(quoted(address) for address in args.to)
    # Shown as the reviewer reads it, not as encoded on the wire (base64, RFC 2047).
    return ToolPreview(
        summary=f"email {to}: {quoted(args.subject)}",
        details=(
            f"From: {quoted(_sender())}\nTo: {to}\nSubject: {quoted(args.subject)}\n"
            "Message-ID: <approval id@hitl-agents>\n\n"
            f"{args.body}\n\n(delivery: {where})"
        ),
        facts={"recipients": len(args.to), "delivery": "smtp" if smtp else "outbox"},
    )


def send_email(call: Call, args: SendEmailArgs) -> ToolResult:
    key = call.key
    message = _message(args, key)
    smtp = os.environ.get("HITL_SMTP_URL")
    if smtp:
        url = urlparse(smtp)
        client_type = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
        with client_type(url.hostname or "localhost", url.port or 0, timeout=30) as client:
            if url.scheme == "smtp+starttls":
                client.starttls()
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
        where = f"SMTP {url.hostname}"
    else:
        safe = "".join(ch for ch in key or "" if ch.isascii() and (ch.isalnum() or ch in "-_"))
        name = safe[:128] or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        where = f"outbox/{name}.eml"
        # Through the workspace like any tool path: an `outbox` symlink is refused.
        split_path(where)
        call.workspace.write_atomic(where, bytes(message), expected_sha256=None)
    return ToolResult(
        ok=True,
        output={"to": args.to, "subject": args.subject, "delivered_to": where},
        summary=f"sent email to {', '.join(quoted(address) for address in args.to)} via {where}",
    )


# --- the registry of implementations and the activities ----------------------------------


@dataclass(frozen=True)
class Implementation:
    run: Callable[[Call, Any], ToolResult]
    preview: Callable[[Workspace, Any], ToolPreview] | None = None


IMPLEMENTATIONS: dict[str, Implementation] = {
    "find_files": Implementation(find_files),
    "read_file": Implementation(read_file),
    "delete_files": Implementation(delete_files, preview_delete),
    "write_file": Implementation(write_file, preview_write),
    "run_command": Implementation(run_command, preview_command),
    "send_email": Implementation(send_email, preview_email),
}
if set(REGISTRY) != set(IMPLEMENTATIONS):
    raise RuntimeError(
        f"every tool needs a spec and an implementation: {set(REGISTRY) ^ set(IMPLEMENTATIONS)}"
    )


def _bound_log(request: ToolRequest) -> Any:
    fields: dict[str, Any] = {"tool": request.action.tool}
    if activity.in_activity():
        fields["workflow_id"] = activity.info().workflow_id
    if request.idempotency_key:
        fields["approval_id"] = request.idempotency_key
    return log.bind(**fields)


def _bounded(preview: ToolPreview) -> ToolPreview:
    """A preview whose text can't grow without bound, whatever the workspace holds."""
    warnings = [clip(warning, MAX_WARNING_CHARS) for warning in preview.warnings[:MAX_WARNINGS]]
    if len(preview.warnings) > MAX_WARNINGS:
        warnings[-1] = (
            f"... and {len(preview.warnings) - MAX_WARNINGS + 1} more warnings; "
            "the details list every entry"
        )
    return preview.model_copy(
        update={
            "summary": clip(preview.summary, MAX_SUMMARY_CHARS),
            "details": clip(preview.details, MAX_DETAILS_CHARS),
            "warnings": warnings,
        }
    )


def _failure(text: str) -> str:
    return clip(visible(text), MAX_ERROR_CHARS)


def _spec_and_args(request: ToolRequest) -> tuple[ToolSpec, Any]:
    spec = REGISTRY.get(request.action.tool)
    if spec is None:
        raise ToolInputError(
            f"there is no tool {quoted(request.action.tool)}; use one of {', '.join(REGISTRY)}"
        )
    try:
        return spec, spec.args_model.model_validate(request.action.args)
    except ValidationError as error:
        raise ToolInputError(
            f"invalid arguments for {spec.name}: {format_validation_error(error)}"
        ) from None


def _preview_sync(request: ToolRequest) -> ToolPreview:
    tool = quoted(request.action.tool)
    try:
        spec, args = _spec_and_args(request)
        implementation = IMPLEMENTATIONS[spec.name]
        with Workspace.open(request.workspace) as workspace:
            if implementation.preview is None:
                arguments = json.dumps(request.action.args, ensure_ascii=False, sort_keys=True)
                return _bounded(ToolPreview(summary=f"{spec.name} {visible(arguments)}"))
            return _bounded(implementation.preview(workspace, args))
    except ToolInputError as error:
        return _bounded(
            ToolPreview(summary=f"{tool}: cannot be carried out as asked", warnings=[str(error)])
        )
    except Exception as error:
        # The reviewer still decides; they are told what failed, not left with a retry loop.
        log.exception("tool.preview_failed", tool=request.action.tool)
        return _bounded(
            ToolPreview(
                summary=f"{tool}: the preview failed",
                warnings=[_failure(f"the preview failed: {type(error).__name__}: {error}")],
            )
        )


def _refused(name: str, error: ToolInputError) -> ToolResult:
    return ToolResult(
        ok=False,
        error=str(error),
        summary=clip(f"{name} refused: {error}", MAX_SUMMARY_CHARS),
    )


def _run_sync(request: ToolRequest) -> ToolResult:
    try:
        spec, args = _spec_and_args(request)
    except ToolInputError as error:
        return _refused(quoted(request.action.tool), error)
    action = request.action.model_dump(mode="json")
    try:
        with Workspace.open(request.workspace) as workspace:
            call = Call(
                workspace=workspace,
                key=request.idempotency_key,
                facts=request.preview.facts if request.preview else {},
            )
            journal = workspace.journal(call.key) if call.key else None
            if journal is not None:
                try:
                    entry = journal.read()
                    if entry and entry.get("status") == "done":
                        return ToolResult.model_validate(entry["result"])
                    claimed = journal.begin(action)
                except (OSError, ValidationError) as error:
                    return ToolResult(
                        ok=False,
                        error=_failure(
                            f"{spec.name} was not carried out: the workspace's journal "
                            f"({JOURNAL_DIR}/) could not be used: {type(error).__name__}: "
                            f"{error}"
                        ),
                        summary=f"{spec.name} not carried out",
                    )
                if not claimed and not spec.idempotent:
                    return ToolResult(
                        ok=False,
                        error=f"an earlier attempt of this approved {spec.name} started but did "
                        "not report back (the worker may have died); it is not repeated, so it "
                        "happens at most once. Check its effect before proposing it again.",
                        summary=f"{spec.name} not repeated after an interrupted attempt",
                    )
            return _carry_out(spec, args, call, journal, action)
    except ToolInputError as error:
        return _refused(spec.name, error)


def _carry_out(
    spec: ToolSpec, args: Any, call: Call, journal: Journal | None, action: dict[str, Any]
) -> ToolResult:
    try:
        result = IMPLEMENTATIONS[spec.name].run(call, args)
    except ToolInputError as error:
        # Refused up front: nothing happened, so a later attempt may act.
        if journal is not None:
            journal.abandon()
        return _refused(spec.name, error)
    except Exception as error:
        if spec.idempotent:
            # Doing it again is harmless, so Temporal's retry policy gets its chance; the
            # activity's failure names this exception.
            if journal is not None:
                journal.abandon()
            raise
        log.exception("tool.failed", tool=spec.name)
        result = ToolResult(
            ok=False,
            error=_failure(
                f"{spec.name} failed: {type(error).__name__}: {error}. It is not retried, so "
                "it happens at most once; it may or may not have taken effect, so check "
                "before proposing it again."
            ),
            summary=f"{spec.name} failed",
        )
    if journal is not None:
        try:
            # For a failure too: a retry of this activity then reports what failed, not a
            # vanished worker.
            journal.finish(action, result.model_dump(mode="json"))
        except OSError:
            log.exception("tool.journal_failed", tool=spec.name)
    return result


@activity.defn(name=contract.ACTIVITY_PREVIEW)
async def preview_tool(request: ToolRequest) -> ToolPreview:
    """Dry run: what the action would change, for the reviewer."""
    # Secret values the worker holds never leave it, whatever the workspace contains.
    preview = redact_model(await heartbeating(asyncio.to_thread(_preview_sync, request)))
    _bound_log(request).info("tool.preview", summary=preview.summary)
    return preview


@activity.defn(name=contract.ACTIVITY_RUN_TOOL)
async def run_tool(request: ToolRequest) -> ToolResult:
    """Carry out one validated (and, where flagged, approved) tool call."""
    bound = _bound_log(request)
    bound.info("tool.start", args=request.action.args)
    result = redact_model(await heartbeating(asyncio.to_thread(_run_sync, request)))
    bound.info("tool.done", ok=result.ok, summary=result.summary, error=result.error)
    return result


@activity.defn(name=contract.ACTIVITY_NOTIFY)
async def notify_approval(record: ApprovalRecord) -> None:
    """Tell reviewers an approval waits (a log line now; webhooks plug in here)."""
    log.bind(
        workflow_id=record.session_id, approval_id=record.id, tool=record.action_json.tool
    ).warning(
        "approval.requested",
        summary=record.preview.summary,
        risk=record.risk,
        expires_at=record.expires_at.isoformat(),
        request=record.context.original_request,
        decide=f"temporal workflow signal --workflow-id {record.session_id} --name approve "
        f'--input \'{{"approval_id": "{record.id}", "reviewer": "you"}}\'',
    )
