"""Pure policy helpers of the approval gate: timeouts, thresholds, durations. No I/O, no
clock, safe inside the workflow. The rules that judge decisions are the ledger's
(`hitl.ledger`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta

from pydantic import ValidationError

from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    MAX_EXTEND_SECONDS,
    EscalationPolicy,
    RuleVerdict,
)

TIMEOUT_REVIEWER = "system:timeout"
POLICY_REVIEWER = "policy"


def approval_timeout(
    tool: str,
    own: timedelta | None,
    run_timeout: float | None = None,
    per_tool: Mapping[str, float] | None = None,
) -> timedelta:
    """Run-and-tool override, then the run's override, then the tool's, then 30 minutes."""
    if per_tool and tool in per_tool:
        return timedelta(seconds=per_tool[tool])
    if run_timeout is not None:
        return timedelta(seconds=run_timeout)
    if own is not None:
        return own
    return timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS)


def stricter_timeout(
    tool: str,
    worker: float | None,
    run_timeout: float | None = None,
    per_tool: Mapping[str, float] | None = None,
) -> tuple[timedelta, list[str]]:
    """The worker's approval timeout for `tool`, shortened (never lengthened) by the run.

    Returns the timeout and, when the run asked for a longer one, a note saying which
    applies, for the record.
    """
    limit = worker if worker is not None else float(DEFAULT_APPROVAL_TIMEOUT_SECONDS)
    # The input holds whatever its starter wrote (1e300 s, a negative number, NaN): only
    # a finite time is taken, at most the worker's and at least none, and nothing here
    # may raise (a workflow task that fails on it would be retried for ever).
    asked = [
        value
        for value in (run_timeout, (per_tool or {}).get(tool))
        if value is not None and math.isfinite(value)
    ]
    chosen = max(0.0, min([limit, *asked]))
    notes = [
        f"the run asked for a {duration_text(value)} approval timeout; "
        f"the worker's {duration_text(limit)} for {tool} applies (a run "
        "may only shorten it)"
        for value in dict.fromkeys(asked)
        if value > limit
    ]
    return timedelta(seconds=chosen), notes


def stricter_threshold(worker: int, run: int | None) -> tuple[int, list[str]]:
    """The worker's auto-approve threshold, lowered (never raised) by the run's input, and
    a note for the record when the run asked for a higher one."""
    if run is None or run <= worker:
        return (worker if run is None else run), []
    return worker, [
        f"the run asked to auto-approve below risk {run}; the worker's threshold {worker} "
        "applies (a run may only lower it)"
    ]


def stricter_escalation(
    worker: EscalationPolicy | None, asked: EscalationPolicy | None
) -> tuple[EscalationPolicy | None, list[str]]:
    """The worker's escalation policy, made stricter (never looser) by what a run asks.

    Who else may decide, and from when, is the worker's alone: a run can't add reviewers
    or bring an escalation forward. It may turn an extension at the deadline into a
    rejection, shorten the extension, and add reminders (they widen nothing). Returns the
    policy and notes for the record where the run asked for more than it gets.
    """
    if asked is None:
        return worker, []
    notes: list[str] = []
    base = worker or EscalationPolicy()
    if asked.to and (asked.to != base.to or asked.escalate_after_seconds is None):
        notes.append(
            "the run asked to escalate to reviewers of its choosing; the worker's escalation "
            "policy applies (a run may only make it stricter)"
        )
    elif (
        asked.escalate_after_seconds is not None
        and base.escalate_after_seconds is not None
        and _finite(asked.escalate_after_seconds) < base.escalate_after_seconds
    ):
        sooner = duration_text(_finite(asked.escalate_after_seconds))
        notes.append(
            f"the run asked to escalate after {sooner}; "
            f"the worker's {duration_text(base.escalate_after_seconds)} applies"
        )
    extend = base.at_deadline == "extend" and asked.at_deadline == "extend"
    if asked.at_deadline == "extend" and base.at_deadline != "extend":
        notes.append(
            "the run asked to extend the deadline; the worker's policy rejects at the deadline"
        )
    by = min(base.extend_by_seconds, _finite(asked.extend_by_seconds)) if extend else 0.0
    if extend and _finite(asked.extend_by_seconds) > base.extend_by_seconds:
        notes.append(
            f"the run asked for a {duration_text(_finite(asked.extend_by_seconds))} extension; "
            f"the worker's {duration_text(base.extend_by_seconds)} applies"
        )
    reminders = sorted(
        {f for f in [*base.remind_at, *asked.remind_at] if math.isfinite(f) and 0 < f < 1}
    )
    merged = base.model_copy(
        update={
            "remind_at": reminders,
            "at_deadline": "extend" if extend and by > 0 else "reject",
            "extend_by_seconds": max(0.0, by) if extend else 0.0,
        }
    )
    if worker is None and not merged.remind_at:
        return None, notes
    return merged, notes


def _finite(value: float) -> float:
    # A run's input holds whatever its starter wrote: NaN and infinities are no time.
    return min(float(MAX_EXTEND_SECONDS * 365), max(0.0, value)) if math.isfinite(value) else 0.0


def duration_text(delta: timedelta | float) -> str:
    exact = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if exact > 366 * 86400:
        return "more than a year"
    seconds = round(exact)
    if abs(exact - seconds) >= 0.0005:
        # Said as set: a 1.5 s timeout cut to "1 s" names a deadline that never was.
        return f"{round(exact, 3)} s"
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def acting_rule(
    verdict: RuleVerdict | None, run_threshold: int | None = None
) -> tuple[RuleVerdict | None, list[str]]:
    """The rules' verdict the gate acts on, and a note for the record: a run's input may
    only make the worker's rules stricter, so a run that turned automatic approval off
    (`auto_approve_below = 0`) gets a person where a rule would approve; a deny stands."""
    if verdict is None or verdict.verdict == "ask":
        return None, []
    if verdict.verdict == "approve" and run_threshold == 0:
        return None, [
            f"rule {verdict.rule} would approve this call, but the run turned automatic "
            "approval off (auto_approve_below = 0), so a person decides"
        ]
    return verdict, []


def auto_approved(risk: int, threshold: int) -> bool:
    """Below the run's threshold the policy approves; threshold 0 approves nothing."""
    return risk < threshold


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
