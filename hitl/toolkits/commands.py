"""The commands toolkit: run a program in the workspace, after a reviewer approves it.

A command is NOT confined to the workspace: it runs with the worker's permissions, and
the preview says so plainly. Run it on a worker that holds no secrets (docs/secrets.md).

Its risk fails closed (`hitl.toolkits.command_risk`): only a program on a short list of
read-only ones (ls, cat, grep, find, sort, ...), found on PATH outside the workspace,
with options known to be harmless and paths that stay inside the workspace, scores low
(30). Every other program scores 85, or more for what is known to be worse: a path
outside the workspace 80, under /proc, /sys or /dev 90, an option that writes a file
(`sort -o`) 90, one that runs a program (`find -exec`) or a program that runs code
(shells, interpreters, `git`, `tar`, `make`, `vim`, `gdb`, `less`) 95, privilege 100.
The preview resolves the paths (symlinks included) and names each reason as a warning.

A standing approval on `run_command` covers only the same program with the same
options (`standing_scope`: `ls -la`, never `ls -la --color=always`, `git` or `cp`), and
only up to the risk it was granted for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator

from hitl.models import ToolPreview, ToolResult
from hitl.secrets import secrets_in
from hitl.text import clip, clip_bytes, quoted
from hitl.toolkits.command_risk import (
    READ_ONLY_RISK,
    assess,
    command_risk,
    path_words,
    place_of,
    program_facts,
    scope_of,
)
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


def _command_risk(args: RunCommandArgs, preview: ToolPreview) -> int:
    """Low only for a read-only program with harmless options reading inside the
    workspace; anything unknown scores high (`hitl.toolkits.command_risk`).

    This runs in the `check_tool` activity, after the preview, so it may rely on what the
    preview found on the filesystem (its facts: which file the program is, where each
    path argument leads). A failed preview leaves no facts, and the command then can't
    score low.
    """
    return clamp(command_risk(args.argv, preview.facts))


def _command_scope(args: RunCommandArgs) -> str:
    return scope_of(args.argv)


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
    standing_scope=_command_scope,
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
    root = os.path.realpath(ctx.workspace.path)
    facts: dict[str, Any] = {"argv": args.argv, "confined": False}
    facts.update(program_facts(args.argv[0], root, os.get_exec_path()))
    facts["paths"] = [place_of(word, root) for word in path_words(args.argv)]
    program = facts["program"]
    # The reviewer is told why it scores what it scores; the risk rule reads the same.
    reasons = [finding for finding in assess(args.argv, facts) if finding.why]
    warnings = [_NOT_CONFINED]
    if not program:
        warnings.append(f"program {quoted(args.argv[0])} was not found on the worker")
    warnings.extend(f"risk {finding.risk}: {finding.why}" for finding in reasons)
    why = "".join(f"\n  {finding.risk}: {finding.why}" for finding in reasons)
    return ToolPreview(
        summary=f"run {_command_line(args.argv)}",
        details=(
            f"command:  {_command_line(args.argv)}\n"
            f"program:  {quoted(program) if program else 'not found'}\n"
            f"starts in: {quoted(str(ctx.workspace.path))}\n"
            f"limit:    {args.timeout_seconds:g} s\n"
            f"risk:     {reasons[0].risk if reasons else READ_ONLY_RISK}"
            f"{why or ' (a read-only program reading inside the workspace)'}\n"
            f"{_NOT_CONFINED}."
        ),
        facts=facts,
        warnings=warnings,
    )
