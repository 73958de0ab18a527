"""A proposed rule set replayed over approvals people already decided: what it would
have changed. Pure: no temporalio; records in, a report out (`hitl policy test`).

Each recorded approval a person decided, or let expire, is judged by the same loader and
evaluator the worker uses (`hitl.rules.judge`), with its tool, arguments, risk, requester
and quorum as recorded. A rule that would have approved or denied it removes a prompt.
Where it would have approved what a person rejected, modified or let expire, that is a
dangerous disagreement, listed with the record; a deny of what a person approved is
listed too (it costs work, not safety). Approvals no person decided (pending, or decided
by policy, a rule or a standing approval) are counted and left out.

What the backtest can't see: the tools' own flags (`auto_approve=False`), which the
worker would also apply; it then reports more approvals, never fewer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hitl.models import ApprovalRecord, RuleVerdict, canonical_json
from hitl.rules import Call, RuleSet, judge
from hitl.text import clip

PERSON_OUTCOMES = ("approved", "modified", "rejected", "expired")
DANGEROUS = ("rejected", "modified", "expired")
"""What a person did that a rule's approval would have overridden."""
ARGS_EXCERPT_CHARS = 200
REASON_CHARS = 300
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Case:
    """One record where the rules and the person disagree."""

    id: str
    run: str
    tool: str
    args: str
    """The arguments' JSON, cut to ARGS_EXCERPT_CHARS (escape it for where it's shown)."""
    outcome: str
    """What the person did: approved, modified, rejected, expired."""
    reviewer: str
    reason: str
    verdict: RuleVerdict
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run": self.run,
            "tool": self.tool,
            "args": self.args,
            "outcome": self.outcome,
            "reviewer": self.reviewer,
            "reason": self.reason,
            "rule": self.verdict.rule,
            "verdict": self.verdict.verdict,
            "rule_reason": self.verdict.reason,
            "created_at": self.created_at.isoformat(),
        }


@dataclass
class Report:
    digest: str
    mode: str
    records: int = 0
    """Every record read."""
    decided: int = 0
    """Of them, those a person decided or let expire: the prompts a rule could remove."""
    removed: int = 0
    """Of those, the ones the rules would have approved or denied."""
    verdicts: Counter[str] = field(default_factory=Counter)
    """verdict → count, over the decided records."""
    by_rule: Counter[str] = field(default_factory=Counter)
    """rule → how many decided records it approved or denied."""
    errors: int = 0
    """Decided records a rule could not judge (asked a person, with an error)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Outcome → records not judged (pending, auto)."""
    dangerous: list[Case] = field(default_factory=list)
    """Approved by the rules, rejected, modified or let expire by a person."""
    denied_approved: list[Case] = field(default_factory=list)
    """Denied by the rules, approved by a person."""
    problems: list[str] = field(default_factory=list)
    """Records that could not be read (a line of an export, a run)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "policy_digest": self.digest,
            "mode": self.mode,
            "records": self.records,
            "decided_by_people": self.decided,
            "prompts_removed": self.removed,
            "verdicts": dict(self.verdicts),
            "by_rule": dict(self.by_rule),
            "errors": self.errors,
            "skipped": dict(self.skipped),
            "dangerous": [case.as_json() for case in self.dangerous],
            "denied_approved": [case.as_json() for case in self.denied_approved],
            "problems": self.problems,
        }


def call_of(record: ApprovalRecord) -> Call:
    """The call as the worker's check judged it: the proposed action (not a reviewer's
    modification), at the recorded risk, from the recorded requester."""
    return Call(
        tool=record.action_json.tool,
        args=record.action_json.args,
        risk=record.risk,
        requester=record.context.requested_by,
        verified=record.context.requester_verified,
    )


def backtest(rules: RuleSet, records: Iterable[ApprovalRecord]) -> Report:
    report = Report(digest=rules.digest, mode=rules.mode)
    for record in records:
        report.records += 1
        outcome = record.outcome
        if outcome not in PERSON_OUTCOMES:
            report.skipped[outcome] += 1
            continue
        report.decided += 1
        verdict = judge(rules, call_of(record), quorum=record.quorum, failed=record.preview.failed)
        report.verdicts[verdict.verdict] += 1
        if verdict.error:
            report.errors += 1
        if verdict.verdict == "ask":
            continue
        report.removed += 1
        report.by_rule[verdict.rule] += 1
        if verdict.verdict == "approve" and outcome in DANGEROUS:
            report.dangerous.append(_case(record, outcome, verdict))
        elif verdict.verdict == "deny" and outcome == "approved":
            report.denied_approved.append(_case(record, outcome, verdict))
    return report


def _case(record: ApprovalRecord, outcome: str, verdict: RuleVerdict) -> Case:
    try:
        args = canonical_json(record.action_json.args)
    except (TypeError, ValueError):
        args = repr(record.action_json.args)
    return Case(
        id=record.id,
        run=record.session_id,
        tool=record.action_json.tool,
        args=clip(args, ARGS_EXCERPT_CHARS),
        outcome=outcome,
        reviewer="" if record.expired else (record.reviewer or ""),
        reason=clip(record.reason or "", REASON_CHARS),
        verdict=verdict,
        created_at=record.created_at,
    )


def read_export(
    path: Path,
    problems: list[str],
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[ApprovalRecord]:
    """The approval records of a JSON Lines audit export (one `ApprovalRecord` per line),
    created in [since, until). A line that is not one is said in `problems` (its number)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = ApprovalRecord.model_validate(json.loads(line))
            except (ValueError, ValidationError) as error:
                if len(problems) < MAX_PROBLEMS:
                    first = str(error).splitlines()[0] if str(error) else type(error).__name__
                    problems.append(f"{path}:{number}: not an approval record ({clip(first, 200)})")
                continue
            if since is not None and record.created_at < since:
                continue
            if until is not None and record.created_at >= until:
                continue
            yield record
