"""What a reviewer sees and answers on a terminal: the approval summary, the prompt, the
review loop (`hitl review` and the starter's inline review) and what became of a decision."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterable, Callable
from datetime import UTC, datetime
from typing import IO

from hitl.arguments import schema_problem
from hitl.decisions import (
    AnyDecision,
    RefusalCode,
    current_digest,
    describe_entry,
    form_of,
    refused_words,
)
from hitl.models import (
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    DecisionEntry,
    ModifyDecision,
    RejectDecision,
)
from hitl.policy import duration_text
from hitl.reviewers import API_ISSUER, SIGNER_ENV, SIGNING_KEY_ENV
from hitl.reviews import Outcome, Reviews
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


def about(seconds: float) -> str:
    """A duration to the unit a reader needs ("45 s", "12 min", "26 h"): whole minutes
    below two hours, whole hours above, in `duration_text`'s words."""
    seconds = int(seconds)
    if seconds >= 7200:
        seconds -= seconds % 3600
    elif seconds >= 120:
        seconds -= seconds % 60
    return duration_text(seconds)


def _ago(moment: datetime, now: datetime) -> str:
    seconds = (now - moment).total_seconds()
    return f"{about(seconds)} ago" if seconds >= 0 else f"in {about(-seconds)}"


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
            f"status {record.state_word.upper()}",
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
    if record.escalation is not None:
        plan_of = record.escalation
        plan = []
        if plan_of.escalate_after_seconds is not None and plan_of.to:
            plan.append(
                f"to {visible(', '.join(plan_of.to))} after {about(plan_of.escalate_after_seconds)}"
            )
        plan.append(
            f"at the deadline: extend once by {about(plan_of.extend_by_seconds)}, then reject"
            if plan_of.at_deadline == "extend"
            else "at the deadline: reject"
        )
        if plan_of.working_hours:
            plan.append(f"working hours {visible(plan_of.working_hours)}")
        lines += framed("Escalation:", " " + "; ".join(plan), width)
    if record.modified_action_json is not None:
        modified = visible_json(record.modified_action_json.args)
        if record.status is ApprovalStatus.PENDING:
            # The digest a decision names now (`--digest`): the modification's, while a
            # quorum still counts.
            modified += f"  (digest {visible(current_digest(record))})"
        lines += framed("Modified:  ", modified, width)
    for step in record.escalations:
        if step.kind == "escalated":
            lines += framed(
                "Escalated: ",
                f"{step.at:%Y-%m-%d %H:%M:%S} UTC to {visible(', '.join(step.to))}",
                width,
            )
        elif step.until is not None:
            lines.append(
                f"Extended:  {step.at:%Y-%m-%d %H:%M:%S} UTC, until {step.until:%H:%M:%S} UTC"
            )
    if record.expired:
        lines += framed(
            "Expired:   ", f"no decision in time (rejected): {visible(record.reason or '')}", width
        )
    elif record.reviewer:
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
    outcome = entry.outcome if entry.outcome == "applied" else refused_words(entry.code, None)
    text = (
        f"{entry.received_at:%H:%M:%S} {entry.kind.value} by {visible(entry.reviewer)}: {outcome}"
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
        editor = find_editor()
        if editor and self.stdin.isatty():
            return edit_in_editor(text, editor)
        self.stdout.write("\n".join(framed("Current arguments: ", text)) + "\n")
        return self.ask("New arguments as JSON (empty to cancel): ") or None


def find_editor() -> str | None:
    """The reviewer's editor: $VISUAL, else $EDITOR (None: neither is set)."""
    return os.environ.get("VISUAL") or os.environ.get("EDITOR") or None


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


def ask_decision(record: ApprovalRecord, reviewer: str, prompter: Prompter) -> AnyDecision | None:
    """y, n (then a reason) or e (then new arguments); None when input ends."""
    common = {
        "approval_id": record.id,
        "reviewer": reviewer,
        "decision_id": f"dec_{uuid.uuid4().hex[:12]}",
        # What the reviewer was shown: a quorum's pending modification, if any.
        "action_digest": current_digest(record),
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


def outcome_words(outcome: Outcome) -> str:
    """What became of a decision sent, in words, escaped: the run's verdict
    (`describe_entry`), or why there is none."""
    approval_id, run_id = visible(outcome.approval_id), visible(outcome.workflow_id)
    if outcome.rejected is not None:
        return visible(refused_words(outcome.code, outcome.rejected))
    if outcome.ended:
        record = outcome.record
        state = "decided" if record is None else record.state_word
        if record is not None and record.reviewer:
            state += f" by {visible(record.reviewer)}"
        title = form_of(RefusalCode.RUN_ENDED).title
        return (
            f"refused ({title}): run {run_id} has already ended; approval {approval_id} is {state}"
        )
    if outcome.entry is None:
        if outcome.no_worker is not None:
            queue = f" {visible(outcome.no_worker)}" if outcome.no_worker else ""
            return (
                f"sent to run {run_id}, but no worker polls its task queue{queue}; it "
                "applies when one runs the workflow (`hitl worker`; `hitl doctor` checks)"
            )
        return (
            f"sent to run {run_id}, but the run did not confirm it in time; it applies when "
            "a worker runs the workflow (`hitl audit` shows it then; `hitl doctor` checks for "
            "workers)"
        )
    return visible(describe_entry(outcome.entry, outcome.record))


async def review(
    reviews: Reviews,
    approvals: AsyncIterable[ApprovalRecord],
    reviewer: str,
    prompter: Prompter,
    report: Callable[[ApprovalRecord, Outcome], None],
) -> bool:
    """The review loop of `hitl review` and of the starter: show each approval, ask, send
    the answer to its run and confirm it, then `report` what became of it. True when the
    answers ended (end of input) before the approvals did."""
    async for record in approvals:
        prompter.stdout.write(format_approval(record) + "\n")
        prompter.stdout.flush()
        decision = await asyncio.to_thread(ask_decision, record, reviewer, prompter)
        if decision is None:
            return True
        sent = await reviews.decide(decision, workflow_id=record.session_id)
        report(record, await reviews.confirm(sent))
    return False
