"""The tool registry: what each tool takes, whether it needs approval, how risky it is.

This module is data and pure functions, imported by the workflow (through the
sandbox) and by the activities. Adding a tool means one `ToolSpec` here and one
implementation in `activities/tools.py`; every path that runs a tool goes
through the workflow's gate, so there is no second way in.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from hitl.models import ToolPreview
from hitl.text import quoted

_CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".json", ".env")
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")

# What one call may carry: everything a call carries is kept in the approval record and
# the run's history (2 MB a payload), so each argument is bounded, with a message that
# tells the model how to stay within the bound.
MAX_PATH_CHARS = 4096
MAX_DELETE_PATHS = 200
MAX_WRITE_BYTES = 256 * 1024
MAX_ARGV_ITEMS = 64
MAX_ARG_CHARS = 4096
MAX_SUBJECT_CHARS = 200
MAX_BODY_BYTES = 64 * 1024
MAX_RECIPIENTS = 50
MAX_ADDRESS_CHARS = 254


def _line_breaking_or_control(text: str) -> bool:
    """Control characters (CR, LF, NUL, ESC, ...) and the Unicode line/paragraph separators."""
    return any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in text)


def _bounded_path(value: str) -> str:
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(
            f"a path of {len(value):,} characters is too long; paths are at most "
            f"{MAX_PATH_CHARS:,} characters"
        )
    return value


_Path = Annotated[str, AfterValidator(_bounded_path)]


class _Args(BaseModel):
    # Unknown argument names are an error the model should hear about, not noise to drop.
    model_config = ConfigDict(extra="forbid")


class FindFilesArgs(_Args):
    """Find files in the workspace by glob pattern and age."""

    pattern: _Path = Field(
        default="*", description="Glob pattern, e.g. '*.log' or 'logs/**/*.log'."
    )
    older_than_days: float | None = Field(
        default=None, ge=0, description="Only files last modified more than this many days ago."
    )


class ReadFileArgs(_Args):
    """Read a text file from the workspace."""

    path: _Path = Field(description="Path relative to the workspace.")


class DeleteFilesArgs(_Args):
    """Delete exactly these files from the workspace."""

    paths: list[_Path] = Field(
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


class WriteFileArgs(_Args):
    """Create or replace a text file in the workspace."""

    path: _Path = Field(description="Path relative to the workspace.")
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


class RunCommandArgs(_Args):
    """Run a program in the workspace (no shell) and return its exit code and output."""

    argv: list[str] = Field(
        min_length=1,
        description=(
            f"Program and arguments, e.g. ['ls', '-l'] (at most {MAX_ARGV_ITEMS} items of "
            f"{MAX_ARG_CHARS} characters each)."
        ),
    )
    timeout_seconds: float = Field(default=60, gt=0, le=3600, description="Time limit.")

    @field_validator("argv")
    @classmethod
    def _bounded(cls, argv: list[str]) -> list[str]:
        if len(argv) > MAX_ARGV_ITEMS:
            raise ValueError(
                f"{len(argv)} arguments given; a command takes at most {MAX_ARGV_ITEMS}: "
                "split the work into several commands"
            )
        if not argv[0].strip():
            raise ValueError("the program name (argv[0]) is empty; name the program to run")
        for index, arg in enumerate(argv):
            if len(arg) > MAX_ARG_CHARS:
                raise ValueError(
                    f"argument {index} is {len(arg):,} characters long; each argument is at "
                    f"most {MAX_ARG_CHARS:,} characters: put long input in a file and pass "
                    "its path"
                )
            if "\x00" in arg:
                raise ValueError(
                    f"argument {index} contains a NUL character, which no program can "
                    "receive; remove it"
                )
        return argv


class SendEmailArgs(_Args):
    """Send an email."""

    to: list[str] = Field(
        min_length=1, description=f"Recipient addresses (at most {MAX_RECIPIENTS})."
    )
    subject: str = Field(
        min_length=1, description=f"One line of at most {MAX_SUBJECT_CHARS} characters."
    )
    body: str = Field(description=f"Plain text, at most {MAX_BODY_BYTES // 1024} KiB.")

    @field_validator("to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_RECIPIENTS:
            raise ValueError(
                f"{len(value)} recipients given; an email goes to at most {MAX_RECIPIENTS}: "
                "send several emails or use a mailing list"
            )
        # A line break in a header value would start another header (header injection),
        # and the message would only fail after the reviewer approved it.
        bad = [
            address
            for address in value
            if len(address) > MAX_ADDRESS_CHARS
            or _line_breaking_or_control(address)
            or not _EMAIL.match(address)
        ]
        if bad:
            raise ValueError(f"not an email address: {', '.join(quoted(item) for item in bad)}")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, subject: str) -> str:
        if not subject.strip():
            raise ValueError("the subject is empty; give a short subject line")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise ValueError(
                f"the subject is {len(subject):,} characters; at most {MAX_SUBJECT_CHARS}: "
                "shorten it and put the rest in the body"
            )
        if _line_breaking_or_control(subject):
            raise ValueError(
                "the subject contains a line break or another control character; write it "
                "as one line of plain text"
            )
        return subject

    @field_validator("body")
    @classmethod
    def _bounded(cls, body: str) -> str:
        size = len(body.encode("utf-8", errors="surrogatepass"))
        if size > MAX_BODY_BYTES:
            raise ValueError(
                f"the body is {size:,} bytes; at most {MAX_BODY_BYTES:,} (64 KiB): shorten "
                "it, or write the details to a file and refer to it"
            )
        return body


RiskFn = Callable[[Any, ToolPreview], int]
ApprovalPredicate = Callable[[Any], bool]


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the agent and the approval gate see it."""

    name: str
    description: str
    args_model: type[_Args]
    requires_approval: bool | ApprovalPredicate = False
    """True, False, or a predicate over the validated arguments."""
    risk: RiskFn = field(default=lambda args, preview: 50)
    """0 (harmless) to 100, from the arguments and the preview."""
    approval_timeout: timedelta | None = None
    """This tool's own approval timeout; None means the run's default."""
    idempotent: bool = True
    """False: the implementation must use the idempotency key to act at most once."""
    read_only: bool = False
    """Changes nothing and is quick: runs as a local activity, saving a server round trip."""
    execution_timeout: Callable[[Any], timedelta] = field(
        default=lambda args: timedelta(seconds=60)
    )

    def needs_approval(self, args: _Args) -> bool:
        if callable(self.requires_approval):
            return bool(self.requires_approval(args))
        return self.requires_approval

    def schema(self) -> dict[str, Any]:
        """The Chat Completions tool definition, derived from the arguments model."""
        parameters = self.args_model.model_json_schema()
        parameters.pop("title", None)
        parameters.pop("description", None)
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": parameters,
            },
        }


def _clamp(value: float) -> int:
    return max(0, min(100, round(value)))


def _delete_risk(args: DeleteFilesArgs, preview: ToolPreview) -> int:
    count = int(preview.facts.get("existing", len(args.paths)))
    megabytes = float(preview.facts.get("total_bytes", 0)) / 1_000_000
    return _clamp(30 + 4 * count + 2 * megabytes)


def _write_risk(args: WriteFileArgs, preview: ToolPreview) -> int:
    config = args.path.lower().endswith(_CONFIG_SUFFIXES) or "config" in args.path.lower()
    overwrite = bool(preview.facts.get("exists"))
    return _clamp(35 + (25 if config else 0) + (15 if overwrite else 0))


# Programs are matched by basename, lower case, version suffix stripped (python3.11,
# perl5.36, lua5.4 -> python, perl, lua; mkfs.ext4 -> mkfs), so a path or a version
# can't make a program look harmless.
_COMMAND_RISK = 60
_RUNS_ANYTHING_RISK = 95
_PRIVILEGED_RISK = 100
_DESTRUCTIVE = frozenset(
    {"rm", "dd", "mkfs", "shred", "truncate", "curl", "wget", "chmod", "chown", "kill",
     "pkill", "killall", "ssh", "scp", "rsync", "nc", "ncat", "socat"}
)  # fmt: skip
_SHELLS = frozenset(
    {"sh", "bash", "rbash", "dash", "ash", "zsh", "ksh", "mksh", "pdksh", "yash", "fish",
     "csh", "tcsh", "busybox", "toybox"}
)  # fmt: skip
# Each runs the command that follows it, so it runs anything a shell could.
_WRAPPERS = frozenset(
    {"env", "xargs", "nohup", "timeout", "nice", "ionice", "stdbuf", "setsid", "chrt",
     "taskset", "time", "flock", "chroot", "unshare", "nsenter", "script", "watch",
     "parallel", "strace", "ltrace", "systemd-run", "firejail", "bwrap"}
)  # fmt: skip
_PRIVILEGED = frozenset({"sudo", "doas", "su", "pkexec", "runuser", "setpriv"})
# With inline code or a script they run anything; sed's `e` command runs a shell.
_INTERPRETERS = frozenset(
    {"python", "pypy", "perl", "ruby", "irb", "node", "nodejs", "deno", "bun", "php",
     "lua", "luajit", "awk", "gawk", "mawk", "nawk", "sed", "osascript", "pwsh",
     "powershell", "tclsh", "wish", "expect", "rscript", "julia", "groovy", "jshell"}
)  # fmt: skip
_ONLY_ASKS_VERSION = frozenset({"--version", "-V", "-v", "-version", "--help", "-h", "-help"})
_FIND_RUNS = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_SHELL_WORD_BREAK = re.compile(r"[\s;&|()<>`'\"{}]+")
_VERSION_SUFFIX = re.compile(r"[-_.]?\d+(?:\.\d+)*[a-z]?$")


def _program_names(word: str) -> set[str]:
    name = word.replace("\\", "/").rsplit("/", 1)[-1].strip().lower().removesuffix(".exe")
    names = {name, _VERSION_SUFFIX.sub("", name), name.split(".", 1)[0]}
    if name.startswith(("python", "pypy")):
        names.add("python")
    return names


def _program_risk(word: str, rest: list[str]) -> int:
    names = _program_names(word)
    if names & _PRIVILEGED:
        return _PRIVILEGED_RISK
    if names & (_SHELLS | _WRAPPERS | _DESTRUCTIVE):
        return _RUNS_ANYTHING_RISK
    if names & _INTERPRETERS and any(arg not in _ONLY_ASKS_VERSION for arg in rest):
        return _RUNS_ANYTHING_RISK
    if "find" in names and ("-delete" in rest or _FIND_RUNS & set(rest)):
        return _RUNS_ANYTHING_RISK
    return _COMMAND_RISK


def _command_risk(args: RunCommandArgs, preview: ToolPreview) -> int:
    """At least as high as the riskiest program the command line runs.

    A wrapper (`env VAR=1 bash -c`, `timeout 5 sudo rm`, `find -exec`) runs what
    follows it, and a shell's inline code runs what it names, so every later word is
    scored as a program too: over-counting a harmless word costs a reviewer a second
    look, under-counting hides what runs.
    """
    argv = args.argv
    risk = _program_risk(argv[0], argv[1:])
    names = _program_names(argv[0])
    looks_through = bool(names & (_WRAPPERS | _PRIVILEGED)) or (
        "find" in names and bool(_FIND_RUNS & set(argv))
    )
    words = list(argv[1:]) if looks_through else []
    if names & _SHELLS:
        # A rough split of the inline code into words is enough to spot program names,
        # and cheap: this runs inside the workflow task.
        for arg in argv[1:]:
            words.extend(word for word in _SHELL_WORD_BREAK.split(arg) if word)
    for index, word in enumerate(words):
        risk = max(risk, _program_risk(word, words[index + 1 :]))
    return _clamp(risk)


def _email_risk(args: SendEmailArgs, preview: ToolPreview) -> int:
    return _clamp(45 + 5 * len(args.to))


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="find_files",
        description=(
            "Find files in the workspace matching a glob pattern, optionally only those "
            "older than N days. Returns relative path, size in bytes and modification time."
        ),
        args_model=FindFilesArgs,
        risk=lambda args, preview: 0,
        read_only=True,
    ),
    ToolSpec(
        name="read_file",
        description="Read a UTF-8 text file from the workspace (at most 64 KiB is returned).",
        args_model=ReadFileArgs,
        risk=lambda args, preview: 0,
        read_only=True,
    ),
    ToolSpec(
        name="delete_files",
        description=(
            "Delete the listed files from the workspace. Needs a human reviewer's approval; "
            "exactly the approved list is deleted."
        ),
        args_model=DeleteFilesArgs,
        requires_approval=True,
        risk=_delete_risk,
    ),
    ToolSpec(
        name="write_file",
        description=(
            "Create or overwrite a text file in the workspace (for example a configuration "
            "file). Needs a human reviewer's approval, who sees a diff."
        ),
        args_model=WriteFileArgs,
        requires_approval=True,
        risk=_write_risk,
    ),
    ToolSpec(
        name="run_command",
        description=(
            "Run a program with arguments (no shell) in the workspace, with a time limit. "
            "Needs a human reviewer's approval. Returns the exit code and output."
        ),
        args_model=RunCommandArgs,
        requires_approval=True,
        risk=_command_risk,
        idempotent=False,
        execution_timeout=lambda args: timedelta(seconds=args.timeout_seconds + 30),
    ),
    ToolSpec(
        name="send_email",
        description="Send an email. Needs a human reviewer's approval; sent at most once.",
        args_model=SendEmailArgs,
        requires_approval=True,
        risk=_email_risk,
        idempotent=False,
    ),
)

REGISTRY: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}


def tool_schemas() -> list[dict[str, Any]]:
    return [spec.schema() for spec in TOOLS]
