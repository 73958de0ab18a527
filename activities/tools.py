"""The tools' implementations and their dry runs, behind three activities.

`preview_tool` says what an action would change, `run_tool` does it, and
`notify_approval` tells reviewers an approval waits. Each tool is one entry in
`IMPLEMENTATIONS`; the specs (flags, risk, schemas) live in `hitl/tools.py`.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import os
import shlex
import shutil
import smtplib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import structlog
from temporalio import activity

from activities.workspace import (
    Journal,
    ToolInputError,
    relative_name,
    resolve,
    workspace_root,
)
from hitl import contract
from hitl.models import ApprovalRecord, ToolPreview, ToolRequest, ToolResult
from hitl.tools import (
    REGISTRY,
    DeleteFilesArgs,
    FindFilesArgs,
    ReadFileArgs,
    RunCommandArgs,
    SendEmailArgs,
    WriteFileArgs,
)

log = structlog.get_logger("hitl.tools")

MAX_FIND_RESULTS = 1000
MAX_READ_BYTES = 64 * 1024
MAX_OUTPUT_BYTES = 32 * 1024
MAX_DIFF_LINES = 400
_SECRET_ENV = ("OPENAI_API_KEY", "HITL_SMTP_URL", "TEMPORAL_API_KEY")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _mtime(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def _age_days(path: Path) -> float:
    return round((time.time() - path.stat().st_mtime) / 86400, 1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@dataclass(frozen=True)
class Call:
    """What an implementation needs besides its arguments."""

    root: Path
    """The resolved workspace."""
    key: str | None = None
    """The approval id: the idempotency key of an approved action."""
    facts: dict[str, Any] = field(default_factory=dict)
    """The facts of the preview the reviewer saw, to refuse what changed since."""


# --- find_files and read_file (read-only) -----------------------------------------------


def find_files(call: Call, args: FindFilesArgs) -> ToolResult:
    root = call.root
    pattern = args.pattern.strip() or "*"
    if pattern.startswith(("/", "~")) or ".." in Path(pattern).parts:
        raise ToolInputError(f"pattern {args.pattern!r} must stay inside the workspace")
    # A bare name pattern matches at any depth, as users of `find -name` expect.
    globbing = root.rglob(pattern) if "/" not in pattern else root.glob(pattern)
    cutoff = time.time() - args.older_than_days * 86400 if args.older_than_days else None
    matches = []
    for path in sorted(globbing):
        name = relative_name(root, path)
        if name.split("/", 1)[0] == ".hitl" or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            continue
        stat = path.stat()
        if cutoff is not None and stat.st_mtime >= cutoff:
            continue
        matches.append(
            {
                "path": name,
                "size": stat.st_size,
                "modified": _mtime(path),
                "age_days": _age_days(path),
            }
        )
    truncated = len(matches) > MAX_FIND_RESULTS
    age = f" older than {args.older_than_days:g} days" if args.older_than_days else ""
    return ToolResult(
        ok=True,
        output={"files": matches[:MAX_FIND_RESULTS], "truncated": truncated},
        summary=f"found {_plural(len(matches), 'file')} matching {pattern!r}{age}",
    )


def read_file(call: Call, args: ReadFileArgs) -> ToolResult:
    path = resolve(call.root, args.path)
    if not path.is_file():
        raise ToolInputError(f"{args.path!r} is not a file in the workspace")
    data = path.read_bytes()
    return ToolResult(
        ok=True,
        output={
            "path": args.path,
            "content": data[:MAX_READ_BYTES].decode("utf-8", errors="replace"),
            "truncated": len(data) > MAX_READ_BYTES,
        },
        summary=f"read {args.path} ({_size(len(data))})",
    )


# --- delete_files -----------------------------------------------------------------------


def preview_delete(root: Path, args: DeleteFilesArgs) -> ToolPreview:
    files: list[dict[str, Any]] = []
    lines, warnings = [], []
    total = 0
    for name in args.paths:
        try:
            path = resolve(root, name)
        except ToolInputError as error:
            files.append({"path": name, "exists": False, "refused": str(error)})
            warnings.append(f"refused: {error}")
            lines.append(f"  {'REFUSED':>9}  {'':19}  {'':>9}  {name}")
            continue
        if path.is_dir():
            files.append({"path": name, "exists": True, "refused": "is a directory"})
            warnings.append(f"{name} is a directory; only files are deleted")
            lines.append(f"  {'DIRECTORY':>9}  {'':19}  {'':>9}  {name}")
            continue
        if not path.exists():
            files.append({"path": name, "exists": False})
            warnings.append(f"{name} does not exist")
            lines.append(f"  {'MISSING':>9}  {'':19}  {'':>9}  {name}")
            continue
        stat = path.stat()
        total += stat.st_size
        files.append(
            {
                "path": name,
                "exists": True,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "modified": _mtime(path),
                "age_days": _age_days(path),
            }
        )
        lines.append(
            f"  {_size(stat.st_size):>9}  {_mtime(path)[:19].replace('T', ' ')}  "
            f"{_age_days(path):>6} d  {name}"
        )
    existing = sum(1 for item in files if item["exists"] and "refused" not in item)
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


def delete_files(call: Call, args: DeleteFilesArgs) -> ToolResult:
    """Deletes exactly the listed files; a file changed since the preview is kept."""
    root = call.root
    seen = {item["path"]: item for item in (call.facts.get("files") or [])}
    deleted, absent, kept = [], [], []
    for name in args.paths:
        try:
            path = resolve(root, name)
        except ToolInputError as error:
            kept.append({"path": name, "reason": str(error)})
            continue
        if not path.exists() and not path.is_symlink():
            absent.append(name)
            continue
        if path.is_dir():
            kept.append({"path": name, "reason": "is a directory"})
            continue
        before = seen.get(name)
        stat = path.stat()
        if (
            before
            and before.get("mtime_ns") is not None
            and (before["mtime_ns"] != stat.st_mtime_ns or before["size"] != stat.st_size)
        ):
            kept.append({"path": name, "reason": "changed since the reviewer saw the preview"})
            continue
        path.unlink()
        deleted.append(name)
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


def preview_write(root: Path, args: WriteFileArgs) -> ToolPreview:
    path = resolve(root, args.path)
    if path.is_dir():
        raise ToolInputError(f"{args.path!r} is a directory")
    old = path.read_bytes() if path.exists() else b""
    old_text = old.decode("utf-8", errors="replace")
    diff = list(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            args.content.splitlines(keepends=True),
            fromfile=f"a/{args.path}" if path.exists() else "/dev/null",
            tofile=f"b/{args.path}",
        )
    )
    shown = "".join(diff[:MAX_DIFF_LINES])
    if len(diff) > MAX_DIFF_LINES:
        shown += f"\n... {len(diff) - MAX_DIFF_LINES} more diff lines\n"
    added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
    verb = "overwrite" if path.exists() else "create"
    return ToolPreview(
        summary=f"{verb} {args.path} (+{added} -{removed} lines)",
        details=shown or "(no change: the file already has this content)",
        facts={
            "exists": path.exists(),
            "old_sha256": _sha256(old) if path.exists() else None,
            "new_bytes": len(args.content.encode()),
        },
    )


def write_file(call: Call, args: WriteFileArgs) -> ToolResult:
    path = resolve(call.root, args.path)
    new = args.content.encode()
    expected = call.facts.get("old_sha256", "unknown")
    current = _sha256(path.read_bytes()) if path.exists() else None
    if expected != "unknown" and current not in (expected, _sha256(new)):
        raise ToolInputError(
            f"{args.path} changed since the reviewer saw the diff; not overwritten"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.hitl-tmp")
    temporary.write_bytes(new)
    os.replace(temporary, path)
    return ToolResult(
        ok=True,
        output={"path": args.path, "bytes": len(new)},
        summary=f"wrote {args.path} ({_size(len(new))})",
    )


# --- run_command ------------------------------------------------------------------------


def preview_command(root: Path, args: RunCommandArgs) -> ToolPreview:
    program = (
        shutil.which(args.argv[0], path=os.environ.get("PATH"))
        if "/" not in args.argv[0]
        else args.argv[0]
    )
    warnings = [] if program else [f"program {args.argv[0]!r} was not found on the worker"]
    return ToolPreview(
        summary=f"run `{shlex.join(args.argv)}`"[:160],
        details=(
            f"command: {shlex.join(args.argv)}\nin:      {root}\n"
            f"limit:   {args.timeout_seconds:g} s\nprogram: {program or 'not found'}"
        ),
        facts={"program": program, "argv": args.argv},
        warnings=warnings,
    )


def _clip(data: bytes) -> str:
    text = data[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > MAX_OUTPUT_BYTES else "")


def run_command(call: Call, args: RunCommandArgs) -> ToolResult:
    env = {name: value for name, value in os.environ.items() if name not in _SECRET_ENV}
    try:
        done = subprocess.run(
            args.argv,
            cwd=call.root,
            env=env,
            capture_output=True,
            timeout=args.timeout_seconds,
            check=False,
        )
    except FileNotFoundError as error:
        raise ToolInputError(f"program {args.argv[0]!r} was not found: {error}") from error
    except subprocess.TimeoutExpired as expired:
        return ToolResult(
            ok=False,
            output={
                "exit_code": None,
                "timed_out": True,
                "stdout": _clip(expired.stdout or b""),
                "stderr": _clip(expired.stderr or b""),
            },
            error=f"the command ran past its {args.timeout_seconds:g} s limit and was killed",
            summary=f"`{shlex.join(args.argv)}` timed out",
        )
    return ToolResult(
        ok=done.returncode == 0,
        output={
            "exit_code": done.returncode,
            "timed_out": False,
            "stdout": _clip(done.stdout),
            "stderr": _clip(done.stderr),
        },
        error=None if done.returncode == 0 else f"exit code {done.returncode}",
        summary=f"`{shlex.join(args.argv)}` exited {done.returncode}"[:200],
    )


# --- send_email -------------------------------------------------------------------------


def _message(args: SendEmailArgs, key: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = os.environ.get("HITL_EMAIL_FROM", "hitl-agent@localhost")
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject
    if key:
        # Receivers that dedupe on Message-ID see one message per approval.
        message["Message-ID"] = f"<{key}@hitl-agents>"
    message.set_content(args.body)
    return message


def preview_email(root: Path, args: SendEmailArgs) -> ToolPreview:
    smtp = os.environ.get("HITL_SMTP_URL")
    where = f"SMTP {urlparse(smtp).hostname}" if smtp else "the workspace's outbox/ (no SMTP)"
    return ToolPreview(
        summary=f"email {', '.join(args.to)}: {args.subject}"[:160],
        details=f"{_message(args, None).as_string()}\n(delivery: {where})",
        facts={"recipients": len(args.to), "delivery": "smtp" if smtp else "outbox"},
    )


def send_email(call: Call, args: SendEmailArgs) -> ToolResult:
    root, key = call.root, call.key
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
        outbox = root / "outbox"
        outbox.mkdir(exist_ok=True)
        name = key or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        target = outbox / f"{name}.eml"
        target.write_bytes(bytes(message))
        where = relative_name(root, target)
    return ToolResult(
        ok=True,
        output={"to": args.to, "subject": args.subject, "delivered_to": where},
        summary=f"sent email to {', '.join(args.to)} via {where}",
    )


# --- the registry of implementations and the activities ----------------------------------


@dataclass(frozen=True)
class Implementation:
    run: Callable[[Call, Any], ToolResult]
    preview: Callable[[Path, Any], ToolPreview] | None = None


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


def _preview_sync(request: ToolRequest) -> ToolPreview:
    spec = REGISTRY[request.action.tool]
    args = spec.args_model.model_validate(request.action.args)
    implementation = IMPLEMENTATIONS[spec.name]
    try:
        root = workspace_root(request.workspace)
        if implementation.preview is None:
            return ToolPreview(summary=f"{spec.name} {request.action.args}")
        return implementation.preview(root, args)
    except ToolInputError as error:
        return ToolPreview(
            summary=f"{spec.name}: cannot be carried out as asked", warnings=[str(error)]
        )


def _run_sync(request: ToolRequest) -> ToolResult:
    spec = REGISTRY[request.action.tool]
    args = spec.args_model.model_validate(request.action.args)
    action = request.action.model_dump(mode="json")
    try:
        call = Call(
            root=workspace_root(request.workspace),
            key=request.idempotency_key,
            facts=request.preview.facts if request.preview else {},
        )
        journal = Journal(call.root, call.key) if call.key else None
        if journal is not None:
            entry = journal.read()
            if entry and entry.get("status") == "done":
                return ToolResult.model_validate(entry["result"])
            if not journal.begin(action) and not spec.idempotent:
                return ToolResult(
                    ok=False,
                    error=f"an earlier attempt of this approved {spec.name} started but did not "
                    "report back (the worker may have died); it is not repeated, so it happens "
                    "at most once. Check its effect before proposing it again.",
                    summary=f"{spec.name} not repeated after an interrupted attempt",
                )
        try:
            result = IMPLEMENTATIONS[spec.name].run(call, args)
        except Exception as error:
            # Release the claim when nothing can have happened (refused up front) or when
            # doing it again is harmless; a non-idempotent action that failed midway
            # stays claimed so that it is never done twice.
            if journal is not None and (spec.idempotent or isinstance(error, ToolInputError)):
                journal.abandon()
            raise
        if journal is not None:
            journal.finish(action, result.model_dump(mode="json"))
        return result
    except ToolInputError as error:
        return ToolResult(ok=False, error=str(error), summary=f"{spec.name} refused: {error}")


@activity.defn(name=contract.ACTIVITY_PREVIEW)
async def preview_tool(request: ToolRequest) -> ToolPreview:
    """Dry run: what the action would change, for the reviewer."""
    preview = await asyncio.to_thread(_preview_sync, request)
    _bound_log(request).info("tool.preview", summary=preview.summary)
    return preview


@activity.defn(name=contract.ACTIVITY_RUN_TOOL)
async def run_tool(request: ToolRequest) -> ToolResult:
    """Carry out one validated (and, where flagged, approved) tool call."""
    bound = _bound_log(request)
    bound.info("tool.start", args=request.action.args)
    result = await asyncio.to_thread(_run_sync, request)
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
