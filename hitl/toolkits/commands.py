"""The commands toolkit: run a program in the workspace, after a reviewer approves it.

A command is NOT confined to the workspace: it runs with the worker's permissions. Its
risk is scored from what the command line runs (shells, interpreters with code,
wrappers, privilege), and the preview says plainly that it is not confined. Run it on
a worker that holds no secrets (docs/secrets.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator

from hitl.models import ToolPreview, ToolResult
from hitl.secrets import secrets_in
from hitl.text import clip, clip_bytes, quoted
from hitl.toolkits.common import MAX_SUMMARY_CHARS, Args, clamp
from hitl.tools import ToolContext, ToolError, tool

MAX_ARGV_ITEMS = 64
MAX_ARG_CHARS = 4096


MAX_OUTPUT_BYTES = 32 * 1024


class RunCommandArgs(Args):
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
    return clamp(risk)


_NOT_CONFINED = (
    "NOT confined to the workspace: the command runs with the worker's own permissions "
    "and can read, change or delete anything the worker can, inside or outside the "
    "workspace; the workspace is only its starting folder"
)


def _command_line(argv: list[str]) -> str:
    return " ".join(quoted(arg) for arg in argv)


def _output(handle: Any) -> str:
    handle.seek(0)
    data = handle.read(MAX_OUTPUT_BYTES + 1)
    size = os.fstat(handle.fileno()).st_size
    text = clip_bytes(data[:MAX_OUTPUT_BYTES], MAX_OUTPUT_BYTES)
    if size > MAX_OUTPUT_BYTES:
        text += f"\n[... {size - MAX_OUTPUT_BYTES:,} more bytes not shown]"
    return text


@tool(
    requires_approval=True,
    risk=_command_risk,
    idempotent=False,
    execution_timeout=lambda args: timedelta(seconds=args.timeout_seconds + 30),
)
def run_command(ctx: ToolContext, args: RunCommandArgs) -> ToolResult:
    """Run a program with arguments (no shell) in the workspace, with a time limit. Needs a
    human reviewer's approval. Returns the exit code and output."""
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
                cwd=ctx.workspace.path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as error:
            # Nothing ran, so the approval's claim may be released.
            raise ToolError(
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


@run_command.preview
def preview_command(ctx: ToolContext, args: RunCommandArgs) -> ToolPreview:
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
            f"starts in: {quoted(str(ctx.workspace.path))}\n"
            f"limit:    {args.timeout_seconds:g} s\n"
            f"{_NOT_CONFINED}."
        ),
        facts={"program": program, "argv": args.argv, "confined": False},
        warnings=warnings,
    )
