"""The workspace as the tools see it: confined, symlink-free, race-safe file access.

Every tool path goes through `Workspace`, which holds the workspace root open as a
directory descriptor and reaches an entry by opening each folder on the way with
`O_NOFOLLOW`, then acts on the last name relative to its folder's descriptor
(`dir_fd=`). What is checked and what is acted on are reached through the same
descriptors, so a folder renamed or a symlink swapped in between the two cannot
redirect the action outside the workspace or into the journal.

Symlink policy: the tools do not follow symbolic links at all. A link inside the
workspace may point anywhere, and following it would let whoever made it choose what
a tool touches. A symlink used as a folder in a path is refused with a clear message;
a symlink as the last entry is not read, not written through and not deleted (it is
reported and kept; removing a link is a job for `run_command`, which the reviewer sees
as such); `find_files` neither lists links nor descends into them.

`.hitl/` at the root holds the journal of approved actions (`Journal`). No tool path
reaches it: the name is refused in any case and Unicode form (some file systems fold
them), a folder with the journal's identity is refused wherever it turns up (a bind
mount), and `walk` never lists it. Only `Journal` opens it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

from hitl.text import quoted
from hitl.toolerror import ToolError

JOURNAL_DIR = ".hitl"
"""Inside each workspace: the record of approved actions, keyed by approval id."""

MAX_PATH_CHARS = 4096
MAX_WALK_ENTRIES = 100_000
"""A walk stops after this many entries, so one huge workspace can't stall a tool."""
MAX_WALK_DEPTH = 64

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal device
# must not become the worker's controlling terminal. Both only matter for entries that
# were swapped in after the type check, which fstat then refuses.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 16

STAMP_KEYS = ("dev", "ino", "size", "mtime_ns", "ctime_ns")
"""What identifies a file and its content for "unchanged since the preview".

mtime can be set back by anyone who can write the file, and a file deleted and made
again often gets the same inode number; the change time (ctime) can't be set back, so
a file rewritten and touched back to its old time is still seen as changed."""

_KIND_TEXT = {
    "file": "regular file",
    "directory": "folder",
    "symlink": "symbolic link",
    "fifo": "FIFO (named pipe)",
    "socket": "socket",
    "char_device": "character device",
    "block_device": "block device",
    "other": "special file",
}


ToolInputError = ToolError
"""A tool call that can't be carried out as asked; the message goes back to the model."""


def describe(kind: str) -> str:
    """A kind of entry in words, with its article: "a FIFO (named pipe)"."""
    text = _KIND_TEXT.get(kind, kind)
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "char_device"
    if stat.S_ISBLK(mode):
        return "block_device"
    return "other"


@dataclass(frozen=True)
class Entry:
    """One workspace entry as `lstat` sees it (links are never followed)."""

    kind: str
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int
    mode: int

    @classmethod
    def of(cls, result: os.stat_result) -> Entry:
        return cls(
            kind=_kind(result.st_mode),
            size=result.st_size,
            mtime_ns=result.st_mtime_ns,
            ctime_ns=result.st_ctime_ns,
            dev=result.st_dev,
            ino=result.st_ino,
            mode=result.st_mode,
        )

    def stamp(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in STAMP_KEYS}

    def matches(self, stamp: Mapping[str, Any]) -> bool:
        """Same file with the same size and modification time as when `stamp` was taken.

        Previews recorded before identity was part of the stamp carry only size and
        mtime; those still count, so runs paused across an upgrade can finish.
        """
        keys = [key for key in STAMP_KEYS if key in stamp]
        if "size" not in keys or "mtime_ns" not in keys:
            return False
        return all(stamp[key] == getattr(self, key) for key in keys)

    def same_file(self, stamp: Mapping[str, Any]) -> bool:
        return all(
            stamp.get(key, getattr(self, key)) == getattr(self, key) for key in ("dev", "ino")
        )


@dataclass(frozen=True)
class Contents:
    data: bytes
    """At most the limit asked for."""
    entry: Entry
    sha256: str | None = None
    """Of the whole file, when asked for."""


def is_journal_name(name: str) -> bool:
    """A top-level name that is, or on some file system could be, the journal folder.

    Case-insensitive file systems fold `.HITL` to `.hitl`, some normalise Unicode, and
    Windows drops trailing dots and spaces; refusing all of them costs nothing.
    """
    folded = unicodedata.normalize("NFKC", name).casefold().rstrip(" .")
    return folded == JOURNAL_DIR


def split_path(text: object) -> tuple[str, ...]:
    """The names along a path relative to the workspace, or a clear refusal.

    Backslashes separate folders too, as a model used to Windows writes them, so that
    `..\\x` is refused rather than taken as one odd name. `.` and empty names are
    dropped, so `./.hitl` is seen for what it is.
    """
    if not isinstance(text, str):
        raise ToolInputError(f"a path must be text, not {type(text).__name__}")
    if len(text) > MAX_PATH_CHARS:
        raise ToolInputError(
            f"a path of {len(text):,} characters is too long; paths are at most "
            f"{MAX_PATH_CHARS:,} characters"
        )
    if "\x00" in text:
        raise ToolInputError(
            f"{quoted(text)} contains a NUL character, which no file name can hold; remove it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolInputError(
            f"{quoted(text)} is not valid Unicode text; give the path as it is listed"
        ) from None
    if not text.strip():
        raise ToolInputError("empty path; give a path relative to the workspace")
    if (
        text.startswith(("/", "\\", "~"))
        or PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
    ):
        raise ToolInputError(
            f"{quoted(text)} is an absolute path; give a path relative to the workspace"
        )
    parts = tuple(part for part in text.replace("\\", "/").split("/") if part not in ("", "."))
    if ".." in parts:
        raise ToolInputError(
            f"{quoted(text)} leads out of the workspace ('..' is not allowed); "
            "give a path inside the workspace"
        )
    if not parts:
        raise ToolInputError(
            f"{quoted(text)} names the workspace itself; give the path of a file in it"
        )
    if is_journal_name(parts[0]):
        raise ToolInputError(_journal_refusal(text))
    return parts


def _journal_refusal(text: str) -> str:
    return (
        f"{quoted(text)} is inside {JOURNAL_DIR}/, which the tools reserve for their "
        "journal; use another path"
    )


def _symlink_refusal(text: str, link: str) -> str:
    # The wording names the danger, so the model understands why a working link is refused.
    what = (
        f"{quoted(text)} is a symbolic link"
        if link == text
        else f"{quoted(text)} goes through {quoted(link)}, a symbolic link"
    )
    return (
        f"{what}; the tools never follow symbolic links, since one could lead outside "
        "the workspace through a symlink or into its journal; use the real path of the file"
    )


def _refusal(text: str, parts: tuple[str, ...], index: int, parent: int, error: OSError) -> str:
    """Why the name at `index` could not be opened as a folder, in words."""
    prefix = "/".join(parts[: index + 1])
    try:
        found = Entry.of(os.stat(parts[index], dir_fd=parent, follow_symlinks=False))
    except OSError:
        found = None
    if found is not None and found.kind == "symlink":
        return _symlink_refusal(text, prefix)
    if found is not None and found.kind != "directory":
        return f"{quoted(text)}: {quoted(prefix)} is {describe(found.kind)}, not a folder"
    if error.errno == errno.ENAMETOOLONG:
        return f"{quoted(text)}: a name in it is longer than the file system allows"
    return f"{quoted(text)}: cannot open {quoted(prefix)}: {error.strerror or error}"


class Workspace:
    """The run's workspace, open as a directory descriptor; every tool path goes through it.

    Use as a context manager: `with Workspace.open(path) as workspace: ...`.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path
        """The resolved root, for display and as a command's working directory."""

    @classmethod
    def open(cls, workspace: str, within: str | None = None) -> Workspace:
        """The workspace at `workspace`; with `within` (a folder of workspaces: the worker's
        `HITL_WORKSPACE_ROOT`, or the one the review API started the run under), only a
        folder below it, reached without following a symbolic link on the way down."""
        root = Path(workspace)
        if not root.is_absolute():
            raise ToolInputError(f"workspace {quoted(workspace)} must be an absolute path")
        if within:
            return cls._open_within(workspace, within)
        # The root itself is the operator's choice, so a symlink to it is fine to follow;
        # below it nothing is.
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else error
            raise ToolInputError(
                f"workspace {quoted(workspace)} does not exist or is not a directory ({reason})"
            ) from None
        return cls(fd, Path(os.path.realpath(root)))

    @classmethod
    def _open_within(cls, workspace: str, within: str) -> Workspace:
        # The folder of workspaces is the operator's, so a link to it is followed; what
        # lies below it may be anyone's (a workspace's own files, a command's `ln -s`), so
        # a link there could make a folder under it reach `/`.
        base, asked = PurePosixPath(within), PurePosixPath(workspace)
        try:
            parts = asked.relative_to(base).parts
        except ValueError:
            parts = ("..",)
        if not parts or ".." in parts or "\x00" in workspace or not base.is_absolute():
            raise ToolInputError(
                f"workspace {quoted(workspace)} is not a folder under {quoted(within)}, where "
                "this run's workspaces are"
            )
        opened: list[int] = []
        try:
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            opened.append(fd)
            for name in parts:
                fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                opened.append(fd)
        except (OSError, ValueError) as error:
            for held in opened:
                os.close(held)
            looped = isinstance(error, OSError) and error.errno in (errno.ELOOP, errno.ENOTDIR)
            reason = (
                "a symbolic link or a file is on the way down, and links below the folder of "
                "workspaces are not followed"
                if looped
                else (error.strerror if isinstance(error, OSError) else str(error))
            )
            raise ToolInputError(
                f"workspace {quoted(workspace)} can't be opened under {quoted(within)} ({reason})"
            ) from None
        for held in opened[:-1]:
            os.close(held)
        return cls(fd, Path(os.path.realpath(base)).joinpath(*parts))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fd(self) -> int:
        return self._fd

    def journal(self, key: str) -> Journal:
        return Journal(self, key)

    # --- reaching an entry -------------------------------------------------------------

    def _journal_identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(JOURNAL_DIR, dir_fd=self._fd, follow_symlinks=False)
        except OSError:
            return None
        return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None

    @contextlib.contextmanager
    def _parent(
        self, text: str, parts: tuple[str, ...], *, create: bool = False
    ) -> Iterator[int | None]:
        """The open folder that holds the last name of `parts`; None if a folder is missing.

        Each folder is opened with O_NOFOLLOW relative to the one before, so no symlink
        is ever followed and no rename elsewhere changes which folder is reached.
        With `create`, missing folders are made (for a file about to be written).
        """
        journal = self._journal_identity()
        fd = os.dup(self._fd)
        try:
            for index, name in enumerate(parts[:-1]):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        yield None
                        return
                    try:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, 0o777, dir_fd=fd)
                        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as error:
                        raise ToolInputError(_refusal(text, parts, index, fd, error)) from None
                except OSError as error:
                    raise ToolInputError(_refusal(text, parts, index, fd, error)) from None
                os.close(fd)
                fd = child
                opened = os.fstat(fd)
                if journal is not None and (opened.st_dev, opened.st_ino) == journal:
                    raise ToolInputError(_journal_refusal(text))
            yield fd
        finally:
            os.close(fd)

    def _lstat(self, parent: int, text: str, name: str) -> Entry | None:
        try:
            entry = Entry.of(os.stat(name, dir_fd=parent, follow_symlinks=False))
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ToolInputError(f"{quoted(text)}: {error.strerror or error}") from None
        if entry.kind == "directory" and (entry.dev, entry.ino) == self._journal_identity():
            raise ToolInputError(_journal_refusal(text))
        return entry

    # --- the operations the tools use -------------------------------------------------

    def stat(self, relative: str) -> Entry | None:
        """The entry at `relative` (a link is reported as a link), or None if there is none."""
        parts = split_path(relative)
        with self._parent(relative, parts) as parent:
            if parent is None:
                return None
            return self._lstat(parent, relative, parts[-1])

    def read(self, relative: str, limit: int, *, digest: bool = False) -> Contents:
        """The first `limit` bytes of a regular file (and the whole file's sha256 if asked).

        Anything but a regular file is refused before it is opened: reading a FIFO would
        wait for a writer forever, and reading a device can have effects of its own.
        """
        parts = split_path(relative)
        with self._parent(relative, parts) as parent:
            entry = None if parent is None else self._lstat(parent, relative, parts[-1])
            if parent is None or entry is None:
                raise ToolInputError(f"{quoted(relative)} does not exist in the workspace")
            _require_file(relative, entry)
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
            except OSError as error:
                raise ToolInputError(f"{quoted(relative)}: {error.strerror or error}") from None
        try:
            opened = Entry.of(os.fstat(fd))
            # Swapped for something else between the lstat and the open.
            _require_file(relative, opened)
            chunks, size = [], 0
            hasher = hashlib.sha256() if digest else None
            while chunk := os.read(fd, _CHUNK):
                if size < limit:
                    chunks.append(chunk[: limit - size])
                size += len(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                elif size >= limit:
                    break
        finally:
            os.close(fd)
        return Contents(
            data=b"".join(chunks),
            entry=opened,
            sha256=hasher.hexdigest() if hasher is not None else None,
        )

    def unlink_if_unchanged(
        self, relative: str, stamp: Mapping[str, Any]
    ) -> Literal["deleted", "absent"]:
        """Delete the regular file at `relative` only if it is the one `stamp` describes.

        Refuses (ToolInputError, the reason) anything else: a link, a folder, a special
        file, another file put in its place, or the same file changed. The name is
        removed from its already-open folder, and unlink never follows a link, so a
        symlink swapped in can't redirect the delete outside the workspace. A regular
        file renamed over the name in the instant between the check and the unlink
        would go instead; only someone who can already rename in that folder can do
        that, and they could delete it themselves.
        """
        parts = split_path(relative)
        with self._parent(relative, parts) as parent:
            if parent is None:
                return "absent"
            entry = self._lstat(parent, relative, parts[-1])
            if entry is None:
                return "absent"
            if entry.kind == "symlink":
                raise ToolInputError(
                    "is now a symbolic link; only the regular file the preview showed is deleted"
                )
            if entry.kind != "file":
                raise ToolInputError(
                    f"is now {describe(entry.kind)}; only the regular file the preview "
                    "showed is deleted"
                )
            if not entry.same_file(stamp):
                raise ToolInputError(
                    "was replaced by another file since the reviewer saw the preview"
                )
            if not entry.matches(stamp):
                raise ToolInputError("changed since the reviewer saw the preview")
            try:
                os.unlink(parts[-1], dir_fd=parent)
            except FileNotFoundError:
                return "absent"
            except OSError as error:
                raise ToolInputError(f"could not be deleted: {error.strerror or error}") from None
        return "deleted"

    def write_atomic(
        self, relative: str, data: bytes, *, expected_sha256: str | None
    ) -> Literal["written", "unchanged"]:
        """Replace (or create) the regular file at `relative` with `data`, all or nothing.

        Only if the file is byte for byte what `expected_sha256` says (None: there is no
        file and there must still be none). Never writes through a symlink. The new
        content goes to a temporary file in the same folder, then takes the name in one
        step; a new file is linked into place, which fails rather than replace a file
        that appeared meanwhile.
        """
        parts = split_path(relative)
        leaf = parts[-1]
        new_sha256 = hashlib.sha256(data).hexdigest()
        # A file that must exist needs its folders to exist too; only a new file's
        # missing folders are made.
        with self._parent(relative, parts, create=expected_sha256 is None) as parent:
            if parent is None:
                raise ToolInputError(
                    f"{quoted(relative)} was deleted since the reviewer saw the diff; not recreated"
                )
            current = self._lstat(parent, relative, leaf)
            current_sha256 = None
            if current is not None:
                if current.kind == "symlink":
                    raise ToolInputError(
                        f"{quoted(relative)} is a symbolic link; write_file never writes "
                        "through a symlink; write the real file instead"
                    )
                _require_file(relative, current)
                current_sha256 = _digest_at(parent, relative, leaf, current)
            if current_sha256 == new_sha256:
                # Already what was approved (an attempt that wrote and then died).
                return "unchanged"
            if current_sha256 != expected_sha256:
                if expected_sha256 is None:
                    raise ToolInputError(
                        f"{quoted(relative)} was created since the reviewer saw the diff "
                        "(it did not exist then); not overwritten"
                    )
                if current_sha256 is None:
                    raise ToolInputError(
                        f"{quoted(relative)} was deleted since the reviewer saw the diff; "
                        "not recreated"
                    )
                raise ToolInputError(
                    f"{quoted(relative)} changed since the reviewer saw the diff; not overwritten"
                )
            temporary = f".hitl-write-{secrets.token_hex(8)}.tmp"
            mode = stat.S_IMODE(current.mode) if current is not None else 0o666
            try:
                fd = os.open(
                    temporary,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    mode,
                    dir_fd=parent,
                )
            except OSError as error:
                raise ToolInputError(
                    f"{quoted(relative)} could not be written: {error.strerror or error}"
                ) from None
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    if current is not None:
                        os.fchmod(fd, mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if current is None:
                    _link_new(parent, relative, temporary, leaf)
                else:
                    now = self._lstat(parent, relative, leaf)
                    if now is None or now.stamp() != current.stamp():
                        raise ToolInputError(
                            f"{quoted(relative)} changed while it was being written; "
                            "not overwritten"
                        )
                    os.replace(temporary, leaf, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError as error:
                # Nothing took the name: the old file, if any, is as it was.
                raise ToolInputError(
                    f"{quoted(relative)} could not be written: {error.strerror or error}"
                ) from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=parent)
        return "written"

    def walk(self, limit: int = MAX_WALK_ENTRIES) -> Walk:
        """Every entry below the root (see `Walk`)."""
        return Walk(self, limit)


def _require_file(text: str, entry: Entry) -> None:
    if entry.kind == "symlink":
        raise ToolInputError(_symlink_refusal(text, text))
    if entry.kind == "directory":
        raise ToolInputError(f"{quoted(text)} is a folder, not a file")
    if entry.kind != "file":
        raise ToolInputError(
            f"{quoted(text)} is {describe(entry.kind)}; the tools only read and write regular files"
        )


def _digest_at(parent: int, text: str, name: str, expected: Entry) -> str:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    except OSError as error:
        raise ToolInputError(f"{quoted(text)}: {error.strerror or error}") from None
    try:
        opened = Entry.of(os.fstat(fd))
        if (opened.kind, opened.dev, opened.ino) != ("file", expected.dev, expected.ino):
            raise ToolInputError(f"{quoted(text)} changed while it was being read; try again")
        hasher = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            hasher.update(chunk)
        return hasher.hexdigest()
    finally:
        os.close(fd)


def _link_new(parent: int, text: str, temporary: str, leaf: str) -> None:
    appeared = ToolInputError(
        f"{quoted(text)} was created since the reviewer saw the diff (it did not exist "
        "then); not overwritten"
    )
    try:
        os.link(temporary, leaf, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        return
    except FileExistsError:
        raise appeared from None
    except OSError:
        pass
    # A file system without hard links: rename instead, after a last check.
    try:
        os.stat(leaf, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        os.replace(temporary, leaf, src_dir_fd=parent, dst_dir_fd=parent)
        return
    raise appeared


class Walk:
    """Entries below the root, depth first in name order.

    Never follows a symlink or enters the journal; stops after `limit` entries or
    `MAX_WALK_DEPTH` folders deep (then `truncated` is set). Names that are not valid
    UTF-8 can't be named in a tool call, so they are counted in `unlisted` instead.
    """

    def __init__(self, workspace: Workspace, limit: int) -> None:
        self._workspace = workspace
        self._limit = limit
        self.visited = 0
        self.truncated = False
        self.unlisted = 0

    def __iter__(self) -> Iterator[tuple[str, Entry]]:
        journal = self._workspace._journal_identity()
        fd = os.dup(self._workspace.fd)
        try:
            yield from self._folder(fd, "", 0, journal)
        finally:
            os.close(fd)

    def _folder(
        self, fd: int, prefix: str, depth: int, journal: tuple[int, int] | None
    ) -> Iterator[tuple[str, Entry]]:
        try:
            with os.scandir(fd) as listing:
                names = []
                for item in listing:
                    names.append(item.name)
                    if len(names) > self._limit:
                        self.truncated = True
                        break
        except OSError:
            return
        for name in sorted(names):
            if self.visited >= self._limit:
                self.truncated = True
                return
            if depth == 0 and is_journal_name(name):
                continue
            try:
                entry = Entry.of(os.stat(name, dir_fd=fd, follow_symlinks=False))
            except OSError:
                continue
            if entry.kind == "directory" and (entry.dev, entry.ino) == journal:
                continue
            self.visited += 1
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                self.unlisted += 1
                continue
            relative = prefix + name
            yield relative, entry
            if entry.kind != "directory":
                continue
            if depth + 1 >= MAX_WALK_DEPTH:
                self.truncated = True
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                yield from self._folder(child, relative + "/", depth + 1, journal)
            finally:
                os.close(child)


class Journal:
    """Approved actions by idempotency key, so an activity retry never acts twice.

    `begin` claims the key atomically (O_EXCL); `finish` stores the result. A key that
    was claimed but never finished means an earlier attempt died mid-action. Lives in
    `.hitl/actions/`, opened like everything else without following links, so a `.hitl`
    symlink planted in the workspace can't send the journal's writes elsewhere.
    """

    def __init__(self, root: Workspace | Path, key: str) -> None:
        safe = "".join(ch for ch in key if ch.isascii() and (ch.isalnum() or ch in "-_"))[:128]
        if not safe:
            raise ToolInputError(f"idempotency key {quoted(key)} has no usable characters")
        self._root = root
        self._name = f"{safe}.json"
        base = root.path if isinstance(root, Workspace) else root
        self.path = base / JOURNAL_DIR / "actions" / self._name
        """Where the entry lives, for people; the code reaches it through descriptors."""

    @contextlib.contextmanager
    def _root_fd(self) -> Iterator[int]:
        if isinstance(self._root, Workspace):
            yield self._root.fd
            return
        fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _actions(self, *, create: bool) -> Iterator[int | None]:
        with self._root_fd() as root:
            opened: list[int] = []
            try:
                fd = root
                for name in (JOURNAL_DIR, "actions"):
                    try:
                        fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except FileNotFoundError:
                        if not create:
                            yield None
                            return
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, 0o700, dir_fd=fd)
                        fd = self._open_folder(name, fd)
                    except OSError as error:
                        raise self._broken(error) from None
                    opened.append(fd)
                yield fd
            finally:
                for fd in opened:
                    os.close(fd)

    def _open_folder(self, name: str, parent: int) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            raise self._broken(error) from None

    @staticmethod
    def _broken(error: OSError) -> ToolInputError:
        return ToolInputError(
            f"the journal folder {JOURNAL_DIR}/ in the workspace is not a plain folder "
            f"({error.strerror or error}); remove it so approved actions can be recorded"
        )

    def read(self) -> dict[str, Any] | None:
        with self._actions(create=False) as folder:
            if folder is None:
                return None
            try:
                fd = os.open(self._name, _READ_FLAGS, dir_fd=folder)
            except FileNotFoundError:
                return None
            except OSError as error:
                raise self._broken(error) from None
            with os.fdopen(fd, "rb") as handle:
                raw = handle.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # Someone wrote junk there: the key was claimed, what happened is unknown.
            return {"status": "unreadable"}
        return data

    def begin(self, action: dict[str, Any]) -> bool:
        with self._actions(create=True) as folder:
            assert folder is not None
            try:
                fd = os.open(
                    self._name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=folder,
                )
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as handle:
                json.dump({"status": "started", "action": action}, handle)
        return True

    def finish(self, action: dict[str, Any], result: dict[str, Any]) -> None:
        temporary = self._name.removesuffix(".json") + ".tmp"
        with self._actions(create=True) as folder:
            assert folder is not None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=folder)
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=folder,
            )
            with os.fdopen(fd, "w") as handle:
                json.dump({"status": "done", "action": action, "result": result}, handle)
            os.replace(temporary, self._name, src_dir_fd=folder, dst_dir_fd=folder)

    def abandon(self) -> None:
        """Release a claim whose action provably did nothing, so a retry may act."""
        with self._actions(create=False) as folder:
            if folder is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._name, dir_fd=folder)
