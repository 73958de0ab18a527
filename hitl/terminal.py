"""What a reviewer sees and answers on a terminal: the approval summary and the prompt."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

import jsonschema

from hitl.decisions import AnyDecision
from hitl.models import (
    ApprovalRecord,
    ApproveDecision,
    DecisionEntry,
    ModifyDecision,
    RejectDecision,
)
from hitl.reviewers import API_ISSUER, SIGNER_ENV, SIGNING_KEY_ENV
from hitl.text import framed, shorten, terminal_width, visible, visible_json

PROMPT = "Approve? [y/n/e(dit)]: "


def reviewer_identity(explicit: str | None = None) -> str:
    """--reviewer, else HITL_REVIEWER, else the person whose own key this process signs
    with (HITL_SIGNER, with HITL_SIGNING_KEY: that key signs only their decisions), else
    the OS user."""
    if explicit:
        return explicit
    if os.environ.get("HITL_REVIEWER"):
        return os.environ["HITL_REVIEWER"]
    signer = os.environ.get(SIGNER_ENV, "").strip()
    if signer and signer != API_ISSUER and os.environ.get(SIGNING_KEY_ENV):
        return signer
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _ago(moment: datetime, now: datetime) -> str:
    seconds = int((now - moment).total_seconds())
    sign = "" if seconds >= 0 else "in "
    seconds = abs(seconds)
    if seconds < 120:
        text = f"{seconds} s"
    elif seconds < 7200:
        text = f"{seconds // 60} min"
    else:
        text = f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{sign}{text}" + (" ago" if not sign else "")


def format_approval(
    record: ApprovalRecord, now: datetime | None = None, width: int | None = None
) -> str:
    """The whole story a reviewer decides on, in the order they read it.

    Everything but the labels, times and numbers was written by the model, the
    workspace or a decision: it is escaped and framed (`hitl.text`), so no name, diff
    or reasoning can redraw the screen or pass for a line of this summary.
    """
    now = now or datetime.now(UTC)
    width = width or terminal_width()
    rule = "─" * 72
    lines = [
        rule,
        *framed(
            "APPROVAL ",
            f"{visible(record.id)}   run {visible(record.session_id)}   "
            f"status {record.status.value.upper()}",
            width,
        ),
        rule,
        *framed("Request:   ", visible(record.context.original_request, multiline=True), width),
    ]
    if record.context.reasoning:
        lines += framed("Reasoning: ", visible(record.context.reasoning, multiline=True), width)
    action = record.action_json
    lines += framed(
        "Action:    ",
        f"{visible(action.tool)}  (digest {visible(record.action_digest)})\n"
        + visible_json(action.args, indent=2),
        width,
    )
    effect = visible(record.preview.summary)
    if record.preview.details:
        effect += "\n" + visible(record.preview.details, multiline=True)
    lines += framed("Effect:    ", effect, width)
    for warning in record.preview.warnings:
        lines += framed("  ! ", visible(warning), width)
    lines += [
        f"Risk:      {record.risk}/100",
        f"Created:   {record.created_at:%Y-%m-%d %H:%M:%S} UTC ({_ago(record.created_at, now)})",
        f"Expires:   {record.expires_at:%Y-%m-%d %H:%M:%S} UTC "
        f"({_ago(record.expires_at, now)}; then auto-rejected)",
    ]
    if record.modified_action_json is not None:
        lines += framed("Modified:  ", visible_json(record.modified_action_json.args), width)
    if record.reviewer:
        decided = f"{record.status.value} by {visible(record.reviewer)}"
        if record.reason:
            decided += f": {visible(record.reason)}"
        lines += framed("Decided:   ", decided, width)
    if record.decisions:
        lines.append("Decisions:")
        for entry in record.decisions:
            lines += framed("  ", format_entry(entry), width)
    if record.refused_dropped:
        lines.append(f"  ({record.refused_dropped} more refused decisions were not kept)")
    lines.append(rule)
    return "\n".join(lines)


def format_entry(entry: DecisionEntry) -> str:
    """One decision on one line; everything its sender wrote is escaped."""
    text = (
        f"{entry.received_at:%H:%M:%S} {entry.kind.value} by {visible(entry.reviewer)}: "
        f"{entry.outcome}"
    )
    if entry.reason:
        text += f" ({visible(entry.reason)})"
    if entry.args is not None:
        text += f" args {shorten(visible_json(entry.args), 200)}"
    if entry.refusal:
        text += f" — {visible(entry.refusal)}"
    if entry.excerpt:
        text += f" [payload {visible(entry.excerpt)}]"
    return text


class Prompter:
    """Asks on a terminal or reads piped answers; end of input means 'stop asking'."""

    def __init__(
        self,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        editor: Callable[[str], str] | None = None,
    ) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.editor = editor

    def ask(self, question: str) -> str | None:
        self.stdout.write(question)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            self.stdout.write("\n")
            return None
        if not self.stdin.isatty():  # echo piped answers
            self.stdout.write(visible(line.removesuffix("\n")) + "\n")
        return line.strip()

    def edit(self, text: str) -> str | None:
        if self.editor is not None:
            return self.editor(text)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if editor and self.stdin.isatty():
            return edit_in_editor(text, editor)
        self.stdout.write("\n".join(framed("Current arguments: ", text)) + "\n")
        return self.ask("New arguments as JSON (empty to cancel): ") or None


def edit_in_editor(text: str, editor: str) -> str:
    with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as handle:
        handle.write(text)
        name = handle.name
    try:
        subprocess.run([*editor.split(), name], check=True)
        with open(name) as edited:
            return edited.read()
    finally:
        os.unlink(name)


def parse_modified_args(record: ApprovalRecord, text: str) -> dict | str:
    """The new arguments, or a sentence saying what is wrong with them."""
    try:
        args = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not valid JSON: {error}"
    if not isinstance(args, dict):
        return 'the arguments must be a JSON object, e.g. {"paths": ["a.log"]}'
    problem = schema_problem(record, args)
    if problem is not None:
        return f"invalid for {record.action_json.tool}: {problem}"
    return args


def schema_problem(record: ApprovalRecord, args: dict) -> str | None:
    """What the tool's JSON Schema says is wrong with new arguments, before they are sent.

    The run checks them again with the tool's own code, which may refuse more.
    """
    if record.args_schema is None:
        return None
    errors = sorted(
        jsonschema.Draft202012Validator(record.args_schema).iter_errors(args),
        key=lambda error: list(error.path),
    )
    if not errors:
        return None
    return "; ".join(
        f"{'.'.join(str(part) for part in error.path) or 'arguments'}: {error.message}"
        for error in errors[:5]
    )


def ask_decision(record: ApprovalRecord, reviewer: str, prompter: Prompter) -> AnyDecision | None:
    """y, n (then a reason) or e (then new arguments); None when input ends."""
    common = {
        "approval_id": record.id,
        "reviewer": reviewer,
        "decision_id": f"dec_{uuid.uuid4().hex[:12]}",
        "action_digest": record.action_digest,
    }
    while True:
        answer = prompter.ask(PROMPT)
        if answer is None:
            return None
        choice = answer.lower()
        if choice in ("y", "yes"):
            return ApproveDecision(**common)
        if choice in ("n", "no"):
            reason = prompter.ask("Reason for rejecting (sent to the agent): ")
            return RejectDecision(**common, reason=reason or "")
        if choice in ("e", "edit"):
            # Escaped as JSON escapes: an editor shows no bidi trick and the text still parses.
            current = visible_json(record.action_json.args, indent=2)
            edited = prompter.edit(current)
            if edited is None:
                continue
            parsed = parse_modified_args(record, edited)
            if isinstance(parsed, str):
                prompter.stdout.write(f"Not sent: {visible(parsed)}. Try again.\n")
                continue
            return ModifyDecision(**common, args=parsed)
        prompter.stdout.write("Answer y (approve), n (reject) or e (edit the arguments).\n")
