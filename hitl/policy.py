"""Pure decisions of the approval gate: no I/O, no clock, safe inside the workflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError

from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    DecisionKind,
    ModifyDecision,
    RejectDecision,
    RunInput,
    ToolAction,
)
from hitl.tools import ToolSpec

TIMEOUT_REVIEWER = "system:timeout"
POLICY_REVIEWER = "policy"

DECISION_MODELS: dict[DecisionKind, type[ApproveDecision | RejectDecision | ModifyDecision]] = {
    DecisionKind.APPROVE: ApproveDecision,
    DecisionKind.REJECT: RejectDecision,
    DecisionKind.MODIFY: ModifyDecision,
}
"""The payload each signal takes; the signal's name decides the kind."""


def approval_timeout(spec: ToolSpec, run: RunInput) -> timedelta:
    """Run-and-tool override, then the run's override, then the tool's, then 30 minutes."""
    if spec.name in run.tool_approval_timeouts:
        return timedelta(seconds=run.tool_approval_timeouts[spec.name])
    if run.approval_timeout_seconds is not None:
        return timedelta(seconds=run.approval_timeout_seconds)
    if spec.approval_timeout is not None:
        return spec.approval_timeout
    return timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS)


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
    """What a decision does to an approval: refused with a reason, or applied."""

    refusal: str | None = None
    modified_action: ToolAction | None = None


def judge(
    record: ApprovalRecord,
    decision: ApproveDecision | RejectDecision | ModifyDecision,
    spec: ToolSpec,
) -> Verdict:
    """First valid decision wins; everything else is refused with a reason to act on."""
    if record.status is not ApprovalStatus.PENDING:
        when = record.reviewed_at.isoformat() if record.reviewed_at else "an earlier time"
        if record.reviewer == TIMEOUT_REVIEWER:
            return Verdict(
                refusal=f"approval {record.id} timed out at {when} and was auto-rejected; "
                "a decision can no longer change it"
            )
        return Verdict(
            refusal=f"approval {record.id} was already {record.status.value} by "
            f"{record.reviewer} at {when}"
        )
    if decision.action_digest is not None and decision.action_digest != record.action_digest:
        return Verdict(
            refusal=f"the decision names action {decision.action_digest}, but approval "
            f"{record.id} is for action {record.action_digest}; look at it again and decide "
            "on what it is now"
        )
    if isinstance(decision, ModifyDecision):
        try:
            args = spec.args_model.model_validate(decision.args)
        except ValidationError as error:
            return Verdict(
                refusal=f"modified arguments are invalid for {spec.name}: "
                f"{format_validation_error(error)}; the approval is still pending"
            )
        return Verdict(
            modified_action=ToolAction(tool=spec.name, args=args.model_dump(mode="json"))
        )
    return Verdict()
