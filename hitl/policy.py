"""Pure decisions of the approval gate: no I/O, no clock, safe inside the workflow."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    ModifyDecision,
    RejectDecision,
)
from hitl.text import quoted

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


def auto_approved(risk: int, threshold: int) -> bool:
    """Below the run's threshold the policy approves; threshold 0 approves nothing."""
    return risk < threshold


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """What a decision does to an approval: refused with a reason, or applied.

    A `modify` that passes these checks still has its arguments checked by the tool
    (`check_args`) before it applies.
    """

    refusal: str | None = None
    check_args: dict[str, Any] | None = None


def refusal_for_decided(record: ApprovalRecord) -> str:
    when = record.reviewed_at.isoformat() if record.reviewed_at else "an earlier time"
    if record.reviewer == TIMEOUT_REVIEWER:
        return (
            f"approval {record.id} timed out at {record.expires_at.isoformat()} and was "
            "auto-rejected; a decision can no longer change it"
        )
    return (
        f"approval {record.id} was already {record.status.value} by "
        f"{quoted(record.reviewer or 'unknown')} at {when}"
    )


def judge(
    record: ApprovalRecord,
    decision: ApproveDecision | RejectDecision | ModifyDecision,
    received_at: datetime,
    modifiable: bool,
) -> Verdict:
    """First valid decision wins; everything else is refused with a reason to act on.

    A decision counts from when it arrived: one that arrived before the deadline is
    judged even if its turn comes later; one at or after the deadline is late.
    """
    if record.status is not ApprovalStatus.PENDING:
        return Verdict(refusal=refusal_for_decided(record))
    if received_at >= record.expires_at:
        return Verdict(
            refusal=f"the decision arrived at {received_at.isoformat()}, at or after approval "
            f"{record.id}'s deadline {record.expires_at.isoformat()}; it is auto-rejected"
        )
    current = (
        record.effective_action.digest() if record.modified_action_json else record.action_digest
    )
    if decision.action_digest is not None and decision.action_digest != current:
        return Verdict(
            refusal=f"the decision names action {quoted(decision.action_digest)}, but approval "
            f"{record.id} is for action {current}; look at it again and decide on what it is now"
        )
    if isinstance(decision, ModifyDecision):
        if not modifiable:
            return Verdict(
                refusal=f"approval {record.id} does not take modified arguments; approve or "
                "reject it"
            )
        return Verdict(check_args=decision.args)
    return Verdict()


def modification_refusal(record: ApprovalRecord, error: Exception) -> str:
    """Why a reviewer's modified arguments were not taken, from what the check raised."""
    if isinstance(error, ValidationError):
        detail = format_validation_error(error)
    elif isinstance(error, ValueError):
        detail = str(error)
    else:
        return (
            f"modified arguments could not be checked for {record.action_json.tool} "
            f"({type(error).__name__}: {error}); the approval is still pending"
        )
    return (
        f"modified arguments are invalid for {record.action_json.tool}: {detail}; the "
        "approval is still pending"
    )
