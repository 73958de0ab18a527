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
