"""Telling reviewers an approval waits."""

from __future__ import annotations

import structlog
from temporalio import activity

from hitl import contract
from hitl.models import ApprovalRecord

log = structlog.get_logger("hitl.notify")


@activity.defn(name=contract.ACTIVITY_NOTIFY)
async def notify_approval(record: ApprovalRecord) -> None:
    """Tell reviewers an approval waits (a log line for now)."""
    log.bind(
        workflow_id=record.session_id, approval_id=record.id, tool=record.action_json.tool
    ).warning(
        "approval.requested",
        summary=record.preview.summary,
        risk=record.risk,
        expires_at=record.expires_at.isoformat(),
        request=record.context.original_request,
        decide=f"hitl approve {record.id}",
    )
