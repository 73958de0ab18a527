"""Confinement of every tool path to the run's workspace, and the tools' own journal."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

JOURNAL_DIR = ".hitl"
"""Inside each workspace: the record of approved actions, keyed by approval id."""


class ToolInputError(ValueError):
    """A tool call that can't be carried out as asked; the message goes back to the model."""


def workspace_root(workspace: str) -> Path:
    root = Path(workspace)
    if not root.is_absolute():
        raise ToolInputError(f"workspace {workspace!r} must be an absolute path")
    if not root.is_dir():
        raise ToolInputError(f"workspace {workspace!r} does not exist or is not a directory")
    return root.resolve()


def resolve(root: Path, relative: str) -> Path:
    """The path inside the workspace, or a clear refusal.

    Refuses absolute paths, `..`, the journal, and symlinks whose target lies outside.
    Returns the unresolved path inside the root, so a link inside is itself acted on.
    """
    text = relative.strip()
    if not text:
        raise ToolInputError("empty path; give a path relative to the workspace")
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or text.startswith("~")
    ):
        raise ToolInputError(
            f"{relative!r} is an absolute path; give a path relative to the workspace"
        )
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if ".." in parts:
        raise ToolInputError(f"{relative!r} leads out of the workspace ('..' is not allowed)")
    if parts and parts[0] == JOURNAL_DIR:
        raise ToolInputError(f"{relative!r} is inside {JOURNAL_DIR}/, which the tools reserve")
    candidate = root.joinpath(*parts)
    if not candidate.resolve().is_relative_to(root):
        raise ToolInputError(f"{relative!r} leads outside the workspace through a symlink")
    return candidate


def relative_name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


class Journal:
    """Approved actions by idempotency key, so an activity retry never acts twice.

    `begin` claims the key atomically (O_EXCL); `finish` stores the result. A key that
    was claimed but never finished means an earlier attempt died mid-action.
    """

    def __init__(self, root: Path, key: str) -> None:
        safe = "".join(ch for ch in key if ch.isalnum() or ch in "-_")
        if not safe:
            raise ToolInputError(f"idempotency key {key!r} has no usable characters")
        self.path = root / JOURNAL_DIR / "actions" / f"{safe}.json"

    def read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return data

    def begin(self, action: dict[str, Any]) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump({"status": "started", "action": action}, handle)
        return True

    def finish(self, action: dict[str, Any], result: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"status": "done", "action": action, "result": result}))
        os.replace(temporary, self.path)

    def abandon(self) -> None:
        """Release a claim whose action provably did nothing, so a retry may act."""
        self.path.unlink(missing_ok=True)
