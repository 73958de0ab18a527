"""The workspace API on real files: confinement, no symlink following, races, the journal.

The property test at the end throws generated paths at every tool through the same
code the activities run, and checks that nothing outside the workspace or in its
journal ever changes, and that every call ends in a result, never an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl.activities.tools import ToolActivities
from hitl.models import ToolAction, ToolPreview, ToolRequest, ToolResult
from hitl.text import visible
from hitl.toolkits.workspace import (
    JOURNAL_DIR,
    Entry,
    Journal,
    ToolInputError,
    Workspace,
    split_path,
)
from hitl.tools import load_tools

TOOLS = ToolActivities(load_tools())


def _preview_sync(request: ToolRequest) -> ToolPreview:
    return asyncio.run(TOOLS.preview_tool(request))


def _run_sync(request: ToolRequest) -> ToolResult:
    return asyncio.run(TOOLS.run_tool(request))


@contextmanager
def opened(root: Path) -> Iterator[Workspace]:
    with Workspace.open(str(root)) as workspace:
        yield workspace


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under `root` with what identifies it and its content, links unfollowed."""
    seen: dict[str, Any] = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = Path(folder, name)
            info = path.lstat()
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[str(path)] = ("file", info.st_ino, info.st_mtime_ns, digest)
            else:
                seen[str(path)] = ("other", info.st_mode, info.st_ino)
    return seen


# --- paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "empty path"),
        ("   ", "empty path"),
        ("/etc/passwd", "absolute path"),
        ("\\etc\\passwd", "absolute path"),
        ("C:\\Windows", "absolute path"),
        ("~/x", "absolute path"),
        ("logs/../../x", "leads out of the workspace"),
        ("logs\\..\\..\\x", "leads out of the workspace"),
        (".", "names the workspace itself"),
        ("./", "names the workspace itself"),
        (".hitl/actions/x.json", "reserve"),
        ("./.hitl/actions/x.json", "reserve"),
        ("logs/./../.hitl", "leads out of the workspace"),
        (".HITL/actions", "reserve"),
        (".Hitl./actions", "reserve"),
        ("\\.hitl\\actions", "absolute path"),
        (".hitl", "reserve"),
        ("a\x00b", "NUL character"),
        ("x" * 4097, "at most 4,096 characters"),
        ("bad-\udcff", "not valid Unicode"),
    ],
)
def test_paths_that_cannot_be_confined_are_refused_with_a_reason(path: str, expected: str) -> None:
    with pytest.raises(ToolInputError, match=expected):
        split_path(path)


def test_odd_but_confined_names_are_data() -> None:
    assert split_path("logs/a\nb.log") == ("logs", "a\nb.log")
    assert split_path("logs//./x\u202egol.txt") == ("logs", "x\u202egol.txt")
    assert split_path(".hitlx/a") == (".hitlx", "a")
    assert split_path("logs/.hitl") == ("logs", ".hitl")


# --- symlinks, special files ------------------------------------------------------------


def test_no_symlink_is_ever_followed(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    (workspace / "in").symlink_to("logs")
    (workspace / "out").symlink_to(tmp_path / "outside")
    (workspace / "file-link").symlink_to("config/app.yaml")
    with opened(workspace) as ws:
        for path in ["in/app-today.log", "out/secret"]:
            with pytest.raises(ToolInputError, match="a symbolic link; the tools never follow"):
                ws.stat(path)
            with pytest.raises(ToolInputError, match="symbolic link"):
                ws.read(path, 100)
        entry = ws.stat("file-link")
        assert entry is not None and entry.kind == "symlink"
        with pytest.raises(ToolInputError, match="is a symbolic link"):
            ws.read("file-link", 100)
        with pytest.raises(ToolInputError, match="never writes through a symlink"):
            ws.write_atomic("file-link", b"new", expected_sha256=None)
        listed = {name for name, _ in ws.walk()}
    assert "in" in listed and "in/app-today.log" not in listed and "out/secret" not in listed
    assert (workspace / "config/app.yaml").read_text() == "x" * 50


def test_fifos_and_sockets_are_refused_before_they_are_opened(workspace: Path) -> None:
    os.mkfifo(workspace / "pipe")
    with opened(workspace) as ws:
        entry = ws.stat("pipe")
        assert entry is not None and entry.kind == "fifo"
        with pytest.raises(ToolInputError, match=r"is a FIFO \(named pipe\)"):
            ws.read("pipe", 100)
        with pytest.raises(ToolInputError, match="FIFO"):
            ws.write_atomic("pipe", b"x", expected_sha256=None)


# --- check and act on the same thing ------------------------------------------------------


def test_a_symlink_swapped_in_between_check_and_delete_cannot_redirect_it(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is swapped for a link to the outside after the file was checked."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = workspace / "logs/app-today.log"
    os.link(target, outside / "app-today.log")  # the same file, so its stamp matches too
    with opened(workspace) as ws:
        entry = ws.stat("logs/app-today.log")
        assert entry is not None
        checked = Entry.matches

        def swap_then_check(self: Entry, stamp: Any) -> bool:
            (workspace / "logs").rename(workspace / "logs-moved")
            (workspace / "logs").symlink_to(outside)
            return checked(self, stamp)

        monkeypatch.setattr(Entry, "matches", swap_then_check)
        assert ws.unlink_if_unchanged("logs/app-today.log", entry.stamp()) == "deleted"
    # The name in the folder that was checked went; the outside name did not.
    assert (outside / "app-today.log").exists()
    assert not (workspace / "logs-moved/app-today.log").exists()


def test_a_racing_symlink_swap_never_reaches_outside(workspace: Path, tmp_path: Path) -> None:
    """A thread flips a folder between itself and a link to the outside while we delete."""
    outside = tmp_path / "outside"
    outside.mkdir()
    real, link = workspace / "real", workspace / "link"
    real.mkdir()
    link.symlink_to(outside)
    victim = real / "v.log"
    victim.write_text("v")
    os.link(victim, outside / "v.log")
    stop, between_flips = threading.Event(), threading.Lock()

    def flip() -> None:
        # `box` is the real folder, then a link to the outside, and so on.
        while not stop.is_set():
            with between_flips:
                for source in (real, link):
                    source.rename(workspace / "box")
                    (workspace / "box").rename(source)
            # Let the deleting thread take the lock: Python's locks are not fair.
            time.sleep(0.0001)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    deleted, tries = 0, 0
    # At least 3000 tries, and on until one deletion went through the real folder (a busy
    # machine can starve the deleting thread for thousands of tries), for 60 s at most.
    deadline = time.monotonic() + 60
    try:
        with opened(workspace) as ws:
            while tries < 3000 or (not deleted and time.monotonic() < deadline):
                tries += 1
                with between_flips:
                    if not victim.exists():
                        os.link(outside / "v.log", victim)
                stamp = Entry.of(os.stat(outside / "v.log")).stamp()
                try:
                    deleted += ws.unlink_if_unchanged("box/v.log", stamp) == "deleted"
                except ToolInputError:
                    pass
                assert (outside / "v.log").exists()
    finally:
        stop.set()
        flipper.join()
    assert deleted, "the race never reached the real folder; the test proved nothing"


def test_write_replaces_only_the_content_the_diff_was_computed_against(workspace: Path) -> None:
    path = workspace / "config/app.yaml"
    old = hashlib.sha256(path.read_bytes()).hexdigest()
    with opened(workspace) as ws:
        with pytest.raises(ToolInputError, match="changed since the reviewer saw the diff"):
            ws.write_atomic("config/app.yaml", b"new", expected_sha256="0" * 64)
        with pytest.raises(ToolInputError, match="was created since"):
            ws.write_atomic("config/app.yaml", b"new", expected_sha256=None)
        with pytest.raises(ToolInputError, match="was deleted since"):
            ws.write_atomic("config/gone.yaml", b"new", expected_sha256=old)
        with pytest.raises(ToolInputError, match="was deleted since"):
            ws.write_atomic("nowhere/gone.yaml", b"new", expected_sha256=old)
        assert not (workspace / "nowhere").exists()
        os.chmod(path, 0o640)
        assert ws.write_atomic("config/app.yaml", b"new", expected_sha256=old) == "written"
        assert ws.write_atomic("config/app.yaml", b"new", expected_sha256=old) == "unchanged"
    assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o640
    assert not [name for name in os.listdir(path.parent) if "hitl-write" in name]


# --- the journal ------------------------------------------------------------------------


def test_the_journal_refuses_a_planted_symlink(workspace: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspace / JOURNAL_DIR).symlink_to(elsewhere)
    with pytest.raises(ToolInputError, match="not a plain folder"):
        Journal(workspace, "apr_1").begin({"tool": "x"})
    assert list(elsewhere.iterdir()) == []


def test_a_bind_mounted_or_case_folded_journal_is_still_refused(workspace: Path) -> None:
    """The journal's identity is refused wherever it turns up, not only by its name."""
    Journal(workspace, "apr_1").begin({"tool": "x"})
    with opened(workspace) as ws:
        real = ws._journal_identity
        assert real() is not None
        logs = os.stat(workspace / "logs")
        # Pretend `logs` is the journal, as a bind mount or a case-folding file system
        # would make it.
        ws._journal_identity = lambda: (logs.st_dev, logs.st_ino)  # type: ignore[method-assign]
        with pytest.raises(ToolInputError, match="reserve"):
            ws.stat("logs/app-today.log")
        with pytest.raises(ToolInputError, match="reserve"):
            ws.stat("logs")
        assert not [name for name, _ in ws.walk() if name.startswith("logs")]


# --- the property: confined or refused, never an exception ------------------------------

_FRAGMENTS = [
    "..",
    ".",
    "",
    "~",
    "~root",
    "/",
    "\\",
    "C:",
    JOURNAL_DIR,
    ".HITL",
    ".hitl.",
    "actions",
    "apr_1.json",
    "logs",
    "a.log",
    "in-link",
    "file-link",
    "out-link",
    "out-file",
    "journal-link",
    "root-link",
    "abs-journal",
    "pipe",
    "\x00",
    "\n",
    "\r",
    "\x1b[2J",
    "\u202e",
    "\u200b",
    "名前",
    "x" * 300,
    "*",
    "**",
]
# Whole paths aimed at the journal and the outside, which random joins rarely hit.
_TARGETED = [
    ".hitl/actions/apr_1.json",
    "./.hitl/actions/apr_1.json",
    ".HITL/actions/apr_1.json",
    ".hitl./actions/apr_1.json",
    ".hitl\\actions\\apr_1.json",
    "logs/../.hitl/actions/apr_1.json",
    "journal-link/actions/apr_1.json",
    "root-link/.hitl/actions/apr_1.json",
    "in-link/../.hitl/actions/apr_1.json",
    "abs-journal/apr_1.json",
    "out-link/a.log",
    "out-link/apr_1.json",
    "out-file",
    "../outside/a.log",
    "{outside}/a.log",
    "{workspace}/.hitl/actions/apr_1.json",
    "file-link",
    "in-link/a.log",
    "pipe",
    "logs/a.log",
]
paths = st.one_of(
    st.sampled_from(_TARGETED),
    st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=6).flatmap(
        lambda parts: st.sampled_from(["/", "\\"]).map(lambda sep: sep.join(parts))
    ),
    st.text(max_size=40),
    st.sampled_from(["x" * 5000, "a/" * 2100, "/" + "a" * 10]),
)


def _make_world(base: Path) -> tuple[Path, Path, Path]:
    workspace, outside = base / "ws", base / "outside"
    (workspace / "logs").mkdir(parents=True)
    (workspace / "logs" / "a.log").write_text("a")
    (workspace / "a.log").write_text("top")
    outside.mkdir()
    (outside / "a.log").write_text("outside")
    (outside / "apr_1.json").write_text("{}")
    Journal(workspace, "apr_1").begin({"tool": "run_command"})
    os.mkfifo(workspace / "pipe")
    (workspace / "in-link").symlink_to("logs")
    (workspace / "file-link").symlink_to("logs/a.log")
    (workspace / "out-link").symlink_to(outside)
    (workspace / "out-file").symlink_to(outside / "a.log")
    (workspace / "journal-link").symlink_to(JOURNAL_DIR)
    (workspace / "root-link").symlink_to(".")
    (workspace / "abs-journal").symlink_to(workspace / JOURNAL_DIR)
    return workspace, outside, workspace / JOURNAL_DIR


def _request(
    workspace: Path, tool: str, seen: ToolPreview | None = None, key: str | None = None, **args: Any
) -> ToolRequest:
    return ToolRequest(
        action=ToolAction(tool=tool, args=args),
        workspace=str(workspace),
        idempotency_key=key,
        preview=seen,
    )


def _clear(result: ToolResult) -> None:
    """A result, not an exception; a refusal says why, and nothing in it hides text."""
    assert isinstance(result, ToolResult)
    assert visible(result.summary) == result.summary
    if not result.ok:
        assert result.error and visible(result.error) == result.error


def _shown(preview: ToolPreview) -> None:
    assert len(preview.summary) <= 200 and visible(preview.summary) == preview.summary
    assert len(preview.details) <= 16 * 1024
    assert visible(preview.details, multiline=True) == preview.details
    assert len(preview.warnings) <= 20
    assert all(len(item) <= 300 and visible(item) == item for item in preview.warnings)


def _forged(path: str, targets: list[Path]) -> list[tuple[str, dict[str, Any], ToolPreview]]:
    """Previews that claim `path` is each of `targets`: acting on them needs a followed link."""
    forged = []
    for target in targets:
        stamp = Entry.of(os.stat(target)).stamp()
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        file = {"path": path, "exists": True, "kind": "file", **stamp}
        forged.append(
            ("delete_files", {"paths": [path]}, ToolPreview(summary="", facts={"files": [file]}))
        )
        content = "forged\n"
        facts = {
            "path": path,
            "exists": True,
            "old_sha256": digest,
            "new_sha256": hashlib.sha256(content.encode()).hexdigest(),
        }
        forged.append(
            ("write_file", {"path": path, "content": content}, ToolPreview(summary="", facts=facts))
        )
    return forged


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(path=paths)
def test_every_tool_call_is_confined_or_refused(path: str) -> None:
    with tempfile.TemporaryDirectory() as base:
        workspace, outside, journal = _make_world(Path(base))
        path = path.replace("{outside}", str(outside)).replace("{workspace}", str(workspace))
        entry = journal / "actions" / "apr_1.json"
        before_outside, before_journal = snapshot(outside), snapshot(journal)

        for tool, args in [
            ("read_file", {"path": path}),
            ("find_files", {"pattern": path}),
            ("write_file", {"path": path, "content": "written by the property test\n"}),
            ("delete_files", {"paths": [path]}),
        ]:
            seen = _preview_sync(_request(workspace, tool, **args))
            _shown(seen)
            result = _run_sync(_request(workspace, tool, seen, key=f"apr_{tool}", **args))
            _clear(result)
            if tool == "find_files" and result.ok:
                for name in (item["path"] for item in result.output["files"]):
                    parts = name.split("/")
                    assert parts[0] != JOURNAL_DIR
                    assert not any(
                        (workspace / "/".join(parts[: index + 1])).is_symlink()
                        for index in range(len(parts))
                    ), name
        for tool, args, seen in _forged(path, [outside / "a.log", entry]):
            _clear(_run_sync(_request(workspace, tool, seen, **args)))

        assert snapshot(outside) == before_outside
        ours = ("apr_read_file", "apr_find_files", "apr_write_file", "apr_delete_files")
        after_journal = snapshot(journal)
        assert after_journal == {
            **before_journal,
            **{key: value for key, value in after_journal.items() if Path(key).stem in ours},
        }
        assert entry.read_text() == '{"status": "started", "action": {"tool": "run_command"}}'
