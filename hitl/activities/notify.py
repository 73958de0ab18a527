"""Telling reviewers what happens to approvals: pending, reminders, decided, timed out."""

from __future__ import annotations

import structlog
from temporalio import activity

from hitl import contract
from hitl.activities.channels import deliver
from hitl.models import ApprovalRecord, NotifyEvent

log = structlog.get_logger("hitl.notify")


@activity.defn(name=contract.ACTIVITY_NOTIFY_EVENT)
async def notify_reviewers(event: NotifyEvent) -> list[dict[str, object]]:
    """Deliver an event to every configured channel; a channel that is down is only logged.

    Returns within `hitl.activities.channels.DEADLINE` (5 s) whatever the channels do."""
    record = event.approval
    deliveries = await deliver(event)
    log.bind(
        workflow_id=record.session_id, approval_id=record.id, tool=record.action_json.tool
    ).info(
        f"approval.{event.event}",
        summary=record.preview.summary,
        risk=record.risk,
        expires_at=record.expires_at.isoformat(),
        status=record.status.value,
        channels={d.channel: "ok" if d.ok else d.error for d in deliveries},
        decide=f"hitl approve {record.id}" if event.event in ("pending", "reminder") else None,
    )
    # A chat message's place (Slack: channel id and ts, no secret) goes into history with
    # the result, so the record of the run says where its approval was posted.
    return [{"channel": d.channel, "ok": d.ok, "attempts": d.attempts, "error": d.error,
             **({"message": d.message} if d.message else {})}
            for d in deliveries]  # fmt: skip


@activity.defn(name=contract.ACTIVITY_NOTIFY)
async def notify_approval(record: ApprovalRecord) -> None:
    """A pending approval, as runs that began before notify_reviewers announce it."""
    # The approval's own time, not now: the delivery id stays the same on a retry.
    await notify_reviewers(NotifyEvent(event="pending", approval=record, at=record.created_at))
