"""Approvals in chat: what a message says about an approval, as plain data.

A platform module (`hitl.chat.slack`; a Teams one would sit beside it) renders a `Card`
in its own markup, escaping every field marked untrusted for that markup, and carries a
`ButtonValue` in its buttons. Nothing here knows a platform.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from hitl.decisions import current_digest
from hitl.models import ApprovalRecord, ApprovalStatus, canonical_json
from hitl.text import clip

REQUEST_CHARS = 500
REASONING_CHARS = 700
ACTION_CHARS = 1200
PREVIEW_CHARS = 1500
REASON_CHARS = 500
MAX_VALUE_CHARS = 2000
"""Slack allows 2000 characters in a button's value; ids and a digest need far fewer."""


@dataclass(frozen=True)
class ButtonValue:
    """What a button carries back: which approval, which exact action, which run. The
    digest binds a click to the action the message showed."""

    approval_id: str
    action_digest: str
    workflow_id: str

    def encode(self) -> str:
        return json.dumps(
            {"a": self.approval_id, "d": self.action_digest, "w": self.workflow_id},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: object) -> ButtonValue | None:
        """The value, or None when it is not one this module made."""
        if not isinstance(text, str) or len(text) > MAX_VALUE_CHARS:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        parts = (data.get("a"), data.get("d"), data.get("w"))
        if not all(isinstance(part, str) and 0 < len(part) <= 600 for part in parts):
            return None
        return cls(*parts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Card:
    """One approval as a chat message shows it. Fields marked untrusted are the model's or
    the workspace's words: a renderer escapes them for its markup."""

    approval_id: str
    workflow_id: str
    tool: str  # untrusted (a model may name any tool)
    summary: str  # untrusted
    request: str  # untrusted
    reasoning: str  # untrusted
    action: str  # untrusted: the exact arguments, as JSON
    preview: str  # untrusted: file list, diff or command, clipped
    preview_clipped: bool
    risk: int
    requested_by: str  # untrusted
    expires_at: datetime
    quorum: int
    votes: tuple[str, ...]  # reviewers (names from the reviewers file)
    status: str
    settled: bool
    outcome: str  # e.g. "approved by bob at 2026-11-28 12:00 UTC"
    reason: str  # untrusted when a reviewer wrote it; shown escaped all the same
    link: str
    button: ButtonValue
    warnings: tuple[str, ...] = field(default_factory=tuple)


def card(record: ApprovalRecord, link: str, timed_out: bool = False) -> Card:
    """The card of an approval as its record stands."""
    action = record.effective_action
    arguments = canonical_json(action.args)
    preview = record.preview.details or ""
    timed_out = timed_out or record.expired
    settled = record.status is not ApprovalStatus.PENDING or timed_out
    if timed_out:
        outcome = f"expired: no decision by {record.expires_at:%Y-%m-%d %H:%M} UTC, rejected"
    elif record.status is ApprovalStatus.PENDING:
        outcome = ""
    else:
        when = f" at {record.reviewed_at:%Y-%m-%d %H:%M} UTC" if record.reviewed_at else ""
        outcome = f"{record.status.value} by {record.reviewer or 'nobody'}{when}"
    return Card(
        approval_id=record.id,
        workflow_id=record.session_id,
        tool=clip(action.tool, 200),
        summary=clip(record.preview.summary, 300),
        request=clip(record.context.original_request, REQUEST_CHARS),
        reasoning=clip(record.context.reasoning, REASONING_CHARS),
        action=clip(arguments, ACTION_CHARS),
        preview=clip(preview, PREVIEW_CHARS),
        preview_clipped=len(preview) > PREVIEW_CHARS,
        risk=record.risk,
        requested_by=clip(record.context.requested_by, 100),
        expires_at=record.expires_at,
        quorum=record.quorum,
        votes=tuple(vote.reviewer for vote in record.votes),
        status="expired" if timed_out else record.status.value,
        settled=settled,
        outcome=outcome,
        reason=clip(record.reason or "", REASON_CHARS),
        link=link,
        button=ButtonValue(record.id, current_digest(record), record.session_id),
        warnings=tuple(clip(w, 200) for w in record.preview.warnings[:5]),
    )
