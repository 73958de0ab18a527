"""The files toolkit: find, read, delete and write files in the run's workspace.

Written with the same public API a user's tools use (`hitl.tools.tool`). Every path
goes through `ctx.workspace` (`hitl.toolkits.workspace.Workspace`): confined to the
workspace, no symlinks followed, race-free; and what runs after approval is exactly what
the preview showed, unchanged, or it is kept and reported.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import Field, field_validator

from hitl.models import ToolPreview, ToolResult
from hitl.text import quoted
from hitl.toolkits.common import Args, PathArg, clamp, plural, size_text
from hitl.toolkits.workspace import Entry, describe
from hitl.tools import ToolContext, ToolError, tool

MAX_DELETE_PATHS = 200
MAX_WRITE_BYTES = 256 * 1024


_CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".json", ".env")


MAX_FIND_RESULTS = 1000


MAX_READ_BYTES = 64 * 1024


MAX_DIFF_LINES = 400


MAX_DIFF_SOURCE_BYTES = 1024 * 1024
"""A larger file is still checked by hash before it is replaced, but not diffed."""


_NO_PREVIEW = "no preview was shown for it"


class FindFilesArgs(Args):
    """Find files in the workspace by glob pattern and age."""

    pattern: PathArg = Field(
        default="*", description="Glob pattern, e.g. '*.log' or 'logs/**/*.log'."
    )
    older_than_days: float | None = Field(
        default=None, ge=0, description="Only files last modified more than this many days ago."
    )


class ReadFileArgs(Args):
    """Read a text file from the workspace."""

    path: PathArg = Field(description="Path relative to the workspace.")


class DeleteFilesArgs(Args):
    """Delete exactly these files from the workspace."""

    paths: list[PathArg] = Field(
        min_length=1,
        description=f"Paths relative to the workspace (at most {MAX_DELETE_PATHS} per call).",
    )

    @field_validator("paths")
    @classmethod
    def _bounded_and_distinct(cls, paths: list[str]) -> list[str]:
        if len(paths) > MAX_DELETE_PATHS:
            raise ValueError(
                f"{len(paths)} paths given: at most {MAX_DELETE_PATHS} paths per call; "
                "split the deletion into several calls"
            )
        seen: set[str] = set()
        for path in paths:
            if path in seen:
                raise ValueError(
                    f"paths must not repeat: {quoted(path)} is listed twice; list each file once"
                )
            seen.add(path)
        return paths


class WriteFileArgs(Args):
    """Create or replace a text file in the workspace."""

    path: PathArg = Field(description="Path relative to the workspace.")
    content: str = Field(
        description=f"The whole new content of the file (at most {MAX_WRITE_BYTES // 1024} KiB)."
    )

    @field_validator("content")
    @classmethod
    def _bounded(cls, content: str) -> str:
        size = len(content.encode("utf-8", errors="surrogatepass"))
        if size > MAX_WRITE_BYTES:
            raise ValueError(
                f"content is {size:,} bytes; write_file writes at most {MAX_WRITE_BYTES:,} "
                "bytes (256 KiB): write a smaller file"
            )
        return content


def _delete_risk(args: DeleteFilesArgs, preview: ToolPreview) -> int:
    count = int(preview.facts.get("existing", len(args.paths)))
    megabytes = float(preview.facts.get("total_bytes", 0)) / 1_000_000
    return clamp(30 + 4 * count + 2 * megabytes)


def _write_risk(args: WriteFileArgs, preview: ToolPreview) -> int:
    config = args.path.lower().endswith(_CONFIG_SUFFIXES) or "config" in args.path.lower()
    overwrite = bool(preview.facts.get("exists"))
    return clamp(35 + (25 if config else 0) + (15 if overwrite else 0))


def _mtime(entry: Entry) -> str:
    return datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC).isoformat(timespec="seconds")


def _age_days(entry: Entry) -> float:
    return round((time.time() - entry.mtime_ns / 1e9) / 86400, 1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# --- find_files and read_file (read-only) -----------------------------------------------


@tool(read_only=True, risk=0)
def find_files(ctx: ToolContext, args: FindFilesArgs) -> ToolResult:
    """Find files in the workspace matching a glob pattern, optionally only those older than
    N days. Returns relative path, size in bytes and modification time."""
    pattern = args.pattern.strip() or "*"
    if "\x00" in pattern:
        raise ToolError("the pattern contains a NUL character; remove it")
    if pattern.startswith(("/", "\\", "~")) or ".." in pattern.replace("\\", "/").split("/"):
        raise ToolError(
            f"pattern {quoted(args.pattern)} must stay inside the workspace: "
            "no absolute path, '~' or '..'"
        )
    matches = _glob(pattern)
    cutoff = time.time() - args.older_than_days * 86400 if args.older_than_days else None
    walk = ctx.workspace.walk()
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
        summary=f"found {plural(len(found), 'file')} matching {quoted(pattern)}{age}",
    )


@tool(read_only=True, risk=0)
def read_file(ctx: ToolContext, args: ReadFileArgs) -> ToolResult:
    """Read a UTF-8 text file from the workspace (at most 64 KiB is returned)."""
    contents = ctx.workspace.read(args.path, MAX_READ_BYTES)
    size = contents.entry.size
    return ToolResult(
        ok=True,
        output={
            "path": args.path,
            "content": contents.data.decode("utf-8", errors="replace"),
            "truncated": size > len(contents.data),
        },
        summary=f"read {quoted(args.path)} ({size_text(size)})",
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


@tool(requires_approval=True, risk=_delete_risk)
def delete_files(ctx: ToolContext, args: DeleteFilesArgs) -> ToolResult:
    """Delete the listed files from the workspace. Needs a human reviewer's approval;
    exactly the approved list is deleted.

    Deletes exactly the regular files the preview showed, each only if unchanged.

    Anything else is kept, with the reason: a path the preview showed as missing,
    refused, a folder or a special file (even if a file is there now), a file replaced
    or changed since, and everything when there was no preview.
    """
    previewed = ctx.facts.get("files")
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
                    outcome = ctx.workspace.unlink_if_unchanged(name, fact)
                except ToolError as error:
                    reason = str(error)
                else:
                    (deleted if outcome == "deleted" else absent).append(name)
                    continue
            kept.append({"path": name, "reason": reason})
    summary = f"deleted {plural(len(deleted), 'file')}"
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


@delete_files.preview
def preview_delete(ctx: ToolContext, args: DeleteFilesArgs) -> ToolPreview:
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
            entry = ctx.workspace.stat(name)
        except ToolError as error:
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
            f"  {size_text(entry.size):>9}  {_mtime(entry)[:19].replace('T', ' ')}  "
            f"{_age_days(entry):>6} d  {quoted(name)}"
        )
    existing = sum(1 for item in files if item.get("deletable"))
    summary = f"delete {plural(existing, 'file')} ({size_text(total)})"
    if len(files) != existing:
        summary += f", {len(files) - existing} not deletable"
    header = f"  {'size':>9}  {'modified (UTC)':19}  {'age':>8}  path"
    return ToolPreview(
        summary=summary,
        details="\n".join([header, *lines]),
        facts={"files": files, "existing": existing, "total_bytes": total},
        warnings=warnings,
    )


# --- write_file -------------------------------------------------------------------------


@tool(requires_approval=True, risk=_write_risk)
def write_file(ctx: ToolContext, args: WriteFileArgs) -> ToolResult:
    """Create or overwrite a text file in the workspace (for example a configuration file).
    Needs a human reviewer's approval, who sees a diff.

    Writes only over exactly the content the diff was computed against.
    """
    facts, new = ctx.facts, args.content.encode()
    if "exists" not in facts:
        raise ToolError(
            f"{quoted(args.path)} not written: {_NO_PREVIEW}, so no one saw the diff; "
            "propose it again"
        )
    if facts.get("path", args.path) != args.path or facts.get("new_sha256", _sha256(new)) != (
        _sha256(new)
    ):
        raise ToolError(f"{quoted(args.path)} not written: the preview was for other arguments")
    expected = facts.get("old_sha256") if facts.get("exists") else None
    outcome = ctx.workspace.write_atomic(args.path, new, expected_sha256=expected)
    return ToolResult(
        ok=True,
        output={"path": args.path, "bytes": len(new), "unchanged": outcome == "unchanged"},
        summary=f"wrote {quoted(args.path)} ({size_text(len(new))})",
    )


@write_file.preview
def preview_write(ctx: ToolContext, args: WriteFileArgs) -> ToolPreview:
    new = args.content.encode()
    entry = ctx.workspace.stat(args.path)
    if entry is not None and entry.kind == "directory":
        raise ToolError(f"{quoted(args.path)} is a folder; give the path of a file")
    old, old_sha256 = b"", None
    if entry is not None:
        # Refuses links and special files; the hash covers the whole file.
        contents = ctx.workspace.read(args.path, MAX_DIFF_SOURCE_BYTES, digest=True)
        old, old_sha256, entry = contents.data, contents.sha256, contents.entry
    exists = entry is not None
    if exists and entry is not None and entry.size > len(old):
        details = (
            f"{quoted(args.path)} has {size_text(entry.size)}, too large to show as a diff; "
            f"it would be replaced by {size_text(len(new))} of new content"
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
