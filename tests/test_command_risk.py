"""run_command's risk fails closed, and a standing approval on it covers one program with
one set of options: what the check activity tells the gate and the reviewer."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment

from hitl.activities.tools import ToolActivities
from hitl.models import ToolCheck, ToolCheckRequest, ToolPreview
from hitl.toolkits.command_risk import READ_ONLY, READ_ONLY_PROGRAMS, path_words
from hitl.toolkits.commands import RunCommandArgs, run_command
from hitl.tools import load_tools

TOOLS = ToolActivities(load_tools())
LOW = 30


@pytest.fixture
def commands_workspace(workspace: Path) -> Path:
    """The logs workspace plus a notes file, symlinks out of it, and a script named ls."""
    (workspace / "notes.txt").write_text("a\nb\n")
    (workspace / "etc").symlink_to("/etc")
    (workspace / "passwd").symlink_to("/etc/passwd")
    (workspace / "environ").symlink_to("/proc/self/environ")
    fake = workspace / "ls"
    fake.write_text("#!/bin/sh\necho pwned\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return workspace


async def checked(workspace: Path, *argv: str) -> ToolCheck:
    request = ToolCheckRequest(
        tool="run_command", args={"argv": list(argv)}, workspace=str(workspace)
    )
    return await ActivityEnvironment().run(TOOLS.check_tool, request)


def reasons(check: ToolCheck) -> list[str]:
    assert check.preview is not None
    return [warning for warning in check.preview.warnings if warning.startswith("risk ")]


# Each command, the least it must score, and a word the reviewer's top reason must name.
HIGH = [
    (["git", "status"], 95, "core.fsmonitor"),
    (["git", "-c", "alias.x=!sh", "x"], 95, "alias"),
    (["tar", "--to-command=sh", "-xf", "a.tar"], 95, "--to-command"),
    (["tar", "--checkpoint-action=exec=sh", "-cf", "x.tar", "."], 95, "checkpoint-action"),
    (["vim", "-c", "!sh", "notes.txt"], 95, "vim"),
    (["make"], 95, "build scripts"),
    (["gdb", "-ex", "shell sh"], 95, "gdb -ex"),
    (["less", "notes.txt"], 95, "LESSOPEN"),
    (["cp", "/dev/null", "notes.txt"], 90, "cp"),
    (["find", ".", "-exec", "rm", "{}", ";"], 95, "rm"),
    (["find", ".", "-name", "x", "-execdir", "ls", "{}", "+"], 95, "-execdir"),
    (["find", ".", "-name", "*.log", "-delete"], 95, "-delete"),
    (["find", ".", "-fprint", "out.txt"], 90, "-fprint"),
    (["find", "/etc", "-name", "shadow"], 80, "/etc"),
    (["find", "-L", ".", "-name", "x"], 80, "-L"),
    (["sort", "-o", "notes.txt", "notes.txt"], 90, "-o"),
    (["sort", "-fo", "out.txt", "notes.txt"], 90, "-o"),
    (["sort", "--output=out.txt", "notes.txt"], 90, "--output"),
    (["sort", "--out=out.txt", "notes.txt"], 90, "--output"),
    (["sort", "--compress-program=sh", "notes.txt"], 95, "--compress-program"),
    (["sort", "-T", "tmp", "notes.txt"], 90, "-T"),
    (["tree", "-o", "out.txt"], 90, "-o"),
    (["file", "-C", "-m", "magic"], 90, "-C"),
    (["file", "-z", "notes.txt"], 95, "-z"),
    (["date", "-s", "2020-01-01"], 90, "clock"),
    (["date", "--set=2020-01-01"], 90, "clock"),
    (["date", "010100002030"], 90, "clock"),
    (["uniq", "notes.txt", "out.txt"], 90, "out.txt"),
    (["xxd", "notes.txt", "out.txt"], 90, "out.txt"),
    (["diff", "-l", "notes.txt", "config/app.yaml"], 95, "-l"),
    (["cat", "/etc/passwd"], 80, "/etc/passwd"),
    (["cat", "--", "/etc/passwd"], 80, "/etc/passwd"),
    (["cat", "../secret"], 80, "../secret"),
    (["cat", "~/.ssh/id_rsa"], 80, "~/.ssh/id_rsa"),
    (["ls", "/"], 80, "/"),
    (["grep", "-r", "x", "/etc"], 80, "/etc"),
    (["grep", "-f", "/etc/shadow", "notes.txt"], 80, "/etc/shadow"),
    (["grep", "--exclude-from=../list", "x", "notes.txt"], 80, "../list"),
    (["grep", "-e", "x", "passwd"], 80, "symlink"),
    (["cat", "etc/passwd"], 80, "symlink"),
    (["ls", "etc"], 80, "symlink"),  # ls lists what a symlink named to it leads to
    (["cat", "/proc/self/environ"], 90, "/proc"),
    (["cat", "environ"], 90, "environ"),
    (["head", "/dev/zero"], 90, "/dev/zero"),
    (["grep", "-R", "x", "."], 80, "-R"),
    (["diff", "-r", "logs", "config"], 80, "-r"),
    (["wc", "--files0-from=list.txt"], 80, "--files0-from"),
    (["sha256sum", "-c", "sums.txt"], 80, "-c"),
    (["strings", "@args.txt"], 80, "@args.txt"),
    (["ls", "--frobnicate"], 85, "--frobnicate"),
    (["ls", "--al"], 85, "--al"),
    (["ls", "-lY"], 85, "-Y"),
    (["./ls", "-la"], 85, "./ls"),
    (["LS", "-la"], 85, "LS"),
    (["python3", "--version"], 85, "python3"),
    (["bash", "-c", "ls"], 95, "shell"),
    (["sudo", "ls"], 100, "sudo"),
]

SAFE = [
    ["ls", "-la"],
    ["ls"],
    ["cat", "notes.txt"],
    ["cat", "logs/../notes.txt"],
    ["cat", "--", "-notes.txt"],
    ["grep", "-r", "x", "."],
    ["grep", "-rn", "--include=*.log", "error", "logs"],
    ["grep", "/etc/passwd", "notes.txt"],  # the pattern, not a path
    ["wc", "-l", "notes.txt"],
    ["head", "-n", "5", "notes.txt"],
    ["tail", "-5", "notes.txt"],
    ["find", ".", "-name", "*.log", "-mtime", "+7", "-type", "f"],
    ["find", "logs", "-newer", "notes.txt", "-size", "-10k"],
    ["sort", "-r", "-k", "2", "notes.txt"],
    ["cut", "-d", "/", "-f", "1", "notes.txt"],  # a delimiter, not a path
    ["diff", "-u", "notes.txt", "config/app.yaml"],
    ["diff", "-r", "--no-dereference", "logs", "config"],
    ["echo", "hello", "/etc/passwd"],
    ["sha256sum", "notes.txt"],
    ["du", "-sh", "."],
    ["stat", "notes.txt"],
    ["date", "+%Y-%m-%d"],
    ["xxd", "-c", "8", "notes.txt"],
    ["od", "-c", "notes.txt"],
    ["uniq", "-c", "notes.txt"],
]


@pytest.mark.parametrize(("argv", "least", "named"), HIGH, ids=[" ".join(c[0]) for c in HIGH])
async def test_commands_that_can_run_code_write_or_read_outside_score_high_and_say_why(
    commands_workspace: Path, argv: list[str], least: int, named: str
) -> None:
    check = await checked(commands_workspace, *argv)
    assert check.ok and check.needs_approval
    assert check.risk >= least
    top = [reason for reason in reasons(check) if reason.startswith(f"risk {check.risk}:")]
    assert any(named in reason for reason in top), reasons(check)


@pytest.mark.parametrize("argv", SAFE, ids=[" ".join(argv) for argv in SAFE])
async def test_only_read_only_programs_reading_the_workspace_score_low(
    commands_workspace: Path, argv: list[str]
) -> None:
    check = await checked(commands_workspace, *argv)
    assert check.risk == LOW, reasons(check)
    assert reasons(check) == []
    assert check.preview is not None and f"risk:     {LOW}" in check.preview.details


async def test_an_absolute_path_inside_the_workspace_is_inside(commands_workspace: Path) -> None:
    inside = await checked(commands_workspace, "cat", str(commands_workspace / "notes.txt"))
    out = await checked(commands_workspace, "cat", str(commands_workspace / "etc" / "hosts"))
    assert (inside.risk, out.risk) == (LOW, 80)


@pytest.mark.parametrize(
    "program", sorted(name for name, spec in READ_ONLY.items() if spec.operands == "paths")
)
async def test_every_read_only_program_scores_high_on_a_file_outside_the_workspace(
    commands_workspace: Path, program: str
) -> None:
    # After `--` too: it ends the options, not the paths.
    check = await checked(commands_workspace, program, "--", "notes.txt", "/etc/passwd")
    assert check.risk >= 80, program


async def test_the_reason_shows_an_untrusted_path_escaped(commands_workspace: Path) -> None:
    check = await checked(commands_workspace, "cat", "/etc/\x1b[2K\rnotes.txt")
    [reason] = reasons(check)
    assert "\x1b" not in reason and "\r" not in reason
    assert "\\u001b[2K\\rnotes.txt" in reason or "\\x1b[2K\\rnotes.txt" in reason


async def test_a_failed_preview_leaves_nothing_to_score_low() -> None:
    # No workspace: the preview can't resolve anything, so even `ls` scores high.
    request = ToolCheckRequest(tool="run_command", args={"argv": ["ls", "-la"]})
    check = await ActivityEnvironment().run(TOOLS.check_tool, request)
    assert check.needs_approval and check.risk >= 80


async def test_a_search_path_into_the_workspace_is_not_the_system_program(
    commands_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([".", os.environ.get("PATH", "")]))
    check = await checked(commands_workspace, "ls", "-la")
    assert check.risk >= 80
    assert check.preview is not None and check.preview.facts["program"].endswith("/ls")
    assert any("PATH" in reason for reason in reasons(check))


# --- whatever the command line, a program off the list never scores low ------------------

_NEAR_MISSES = sorted(
    {
        variant
        for name in READ_ONLY_PROGRAMS
        for variant in (
            name.upper(),
            f"./{name}",
            f"/usr/bin/{name}",
            f"{name}.sh",
            f"{name}2",
            f" {name}",
            f"{name}\u200b",
            f"{name}/",
        )
    }
)
_WORDS = sorted(
    {
        f"-{key}" if len(key) == 1 else f"--{key}"
        for spec in READ_ONLY.values()
        for key in spec.options
    }
    | {"--", "-", ".", "notes.txt", "-exec", "-delete", "/etc/passwd", "{}", ";"}
)
_program = st.one_of(
    st.sampled_from(_NEAR_MISSES),
    st.sampled_from(["git", "tar", "make", "vim", "less", "gdb", "cp", "sed", "env", "sh"]),
    st.text(min_size=1, max_size=12),
)
_argv = st.tuples(
    _program, st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=12)), max_size=6)
).map(lambda parts: [parts[0], *parts[1]])


def _score(argv: list[str], facts: dict[str, object]) -> int:
    return run_command.score(RunCommandArgs(argv=argv), ToolPreview(summary="", facts=facts))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=_argv)
def test_any_program_off_the_read_only_list_scores_at_least_80(argv: list[str]) -> None:
    assume(argv[0] not in READ_ONLY_PROGRAMS)
    try:
        RunCommandArgs(argv=argv)
    except ValidationError:
        assume(False)
    # The most favourable preview there could be: found outside the workspace, every
    # path inside it. Without a preview at all, the same.
    best = {
        "program": "/usr/bin/x",
        "program_in_workspace": False,
        "search_path_in_workspace": False,
        "paths": ["inside"] * len(path_words(argv)),
    }
    assert _score(argv, best) >= 80
    assert _score(argv, {}) >= 80


# --- standing approvals cover one program with one set of options -------------------------


async def test_a_standing_scope_is_the_program_and_its_options(commands_workspace: Path) -> None:
    async def key(*argv: str) -> str | None:
        return (await checked(commands_workspace, *argv)).scope_key

    granted = await key("ls", "-la")
    assert granted == "ls -la"
    assert await key("ls", "-la", "logs") == await key("ls", "-la", "config") == granted
    others = [
        await key("ls", "-la", "--color"),
        await key("ls", "-la", "--color=always"),
        await key("ls", "-la", "--color=never"),
        await key("ls", "-l", "-a"),
        await key("ls", "-a", "-l"),
        await key("ls"),
        await key("git", "status"),
        await key("git", "-la"),
        await key("cp", "-la", "/dev/null", "notes.txt"),
    ]
    assert granted not in others and len(set(others)) == len(others)
    # A name looked up on PATH is named as it is matched (a version makes no other
    # program); a path names that file, so a script `./ls` is not the ls granted. Off the
    # read-only list, a grant covers the exact command only.
    assert await key("python3.11", "-c", "x") == await key("python3", "-c", "x") == "python -c x"
    assert await key("git", "status") != await key("git", "init", "x")
    paths = {await key(word, "-la") for word in ("./ls", "/usr/bin/ls", "/usr/bin/LS", "sub/ls")}
    assert granted not in paths and len(paths) == 4


async def test_only_calls_that_need_approval_carry_a_scope_key(commands_workspace: Path) -> None:
    async def check(tool: str, **args: object) -> ToolCheck:
        request = ToolCheckRequest(tool=tool, args=args, workspace=str(commands_workspace))
        return await ActivityEnvironment().run(TOOLS.check_tool, request)

    assert (await check("find_files", pattern="*.log")).scope_key is None
    # delete_files needs approval but has no standing scope: the tool alone is the scope.
    deleted = await check("delete_files", paths=["notes.txt"])
    assert deleted.needs_approval and deleted.scope_key is None


async def test_a_standing_scope_names_what_leaves_the_workspace_and_what_is_written(
    commands_workspace: Path,
) -> None:
    """A grant made on one outside read or one write (risk 80 or 90, a reviewer allowed
    that much) covers that target, never another file outside or another file written."""

    async def key(*argv: str) -> str | None:
        return (await checked(commands_workspace, *argv)).scope_key

    pairs = [
        (("uniq", "a.txt", "b.txt"), ("uniq", "/etc/hosts", "/home/x/.bashrc")),
        (("sort", "-o", "out", "a.txt"), ("sort", "-o", "/root/.bashrc", "/etc/shadow")),
        (("cat", "../x"), ("cat", "~/.aws/credentials")),
        (("cat", "../x"), ("cat", "../../etc/passwd")),
        (("ls", "-la", "/etc"), ("ls", "-la", "/root")),
        (("xxd", "-r", "a", "b"), ("xxd", "-r", "a", "/home/x/.profile")),
    ]
    for granted, other in pairs:
        assert await key(*granted) != await key(*other), (granted, other)
    # Inside the workspace a read-only grant still covers other paths.
    assert await key("cat", "notes.txt") == await key("cat", "logs/app.log") == "cat"
