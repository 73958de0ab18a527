"""The API's own request and response models: only what the library has no model for.

The approvals, decisions and receipts themselves are the library's models
(`ApprovalRecord`, `PendingApproval`, `DecisionEntry`, `RefusedDecision`), answered as
they are; these wrap them (a page, a problem, an answer to a decision) or hold what
only HTTP has (request bodies, health).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hitl.models import (
    MAX_REASON_CHARS,
    MAX_REVIEWER_CHARS,
    MAX_TASK_CHARS,
    ApprovalRecord,
    ApprovalStatus,
    DecisionEntry,
    PendingApproval,
    RefusedDecision,
    ScriptedTurn,
)

# --- what the API answers ----------------------------------------------------------------------


class Problem(BaseModel):
    """Why a request was not done, in one sentence that says what to do."""

    detail: str
    code: str | None = None
    """Why, as a stable code to branch on (the sentence may change; the code does not): one
    of `hitl.decisions.RefusalCode`, e.g. `stale_action`, `not_allowed`, `not_found`. The
    HTTP status is the code's (`hitl.decisions.FORMS`)."""
    title: str | None = None
    """The code in a few words (its `FORMS` title, e.g. "the action changed"), for a list."""
    entry: DecisionEntry | None = None
    """For a decision the run refused: its entry in the decision log."""
    record: ApprovalRecord | None = None
    """For a decision the run refused: the approval as it is now (who decided, when)."""


class ApprovalItem(PendingApproval):
    """A listed approval: the memo's summary, with where it stands."""

    status: ApprovalStatus = ApprovalStatus.PENDING
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    expired: bool = False
    """Rejected because nobody decided in time (`status` stays `rejected`)."""
    reason: str | None = None
    """A decided one's reason (a rejection's, or a comment)."""
    outcome: Literal["pending", "approved", "modified", "rejected", "expired", "auto"] | None = None
    """How it ended, in the words stats and audit use (`ApprovalRecord.outcome`): `auto`
    when no person decided it."""

    @classmethod
    def of(cls, record: ApprovalRecord) -> ApprovalItem:
        return cls(
            **record.summary().model_dump(),
            status=record.status,
            reviewer=record.reviewer,
            reviewed_at=record.reviewed_at,
            expired=record.expired,
            reason=record.reason,
            outcome=record.outcome,
        )


class ApprovalPage(BaseModel):
    items: list[ApprovalItem]
    next_page_token: str | None = None
    """Pass it as `page_token` for the next page; null on the last one."""


class HistoryPage(ApprovalPage):
    """Decided approvals, newest decision first."""

    complete: bool = True
    """False: some runs could not be read (`problems` says which), or the range held more
    than one listing reads (narrow it with `since` and `until`)."""
    problems: list[str] = Field(default_factory=list)


class Decided(BaseModel):
    """A decision the run took (200), or sent and not yet confirmed (202)."""

    outcome: Literal["applied", "sent"]
    message: str
    entry: DecisionEntry | None = None
    record: ApprovalRecord | None = None


class RunSummary(BaseModel):
    id: str
    run_id: str
    workflow_type: str
    state: str
    status: str
    pending: int
    started_at: datetime
    task: str


class RunDetail(BaseModel):
    """Every approval of a workflow id, across continue-as-new, with every decision."""

    id: str
    status: str
    runs: list[str]
    approvals: list[ApprovalRecord]
    refused_decisions: list[RefusedDecision]


class Started(BaseModel):
    id: str
    run_id: str
    requested_by: str
    """The token's reviewer: the run records them as who asked (the worker verifies it)."""
    signed: bool
    """Signed as `api`: a worker that takes only signed starts accepts the run."""


class Health(BaseModel):
    status: Literal["ok"]
    auth: Literal["bearer", "none"]
    """`none`: started with --insecure-no-auth; decisions are unauthenticated."""
    signing: bool
    """Decisions are signed as issuer `api` (HITL_SIGNING_KEY)."""
    reviewer: str | None = None
    """Who the request's token names, if it sent one."""


EventType = Literal[
    "approval.pending", "approval.updated", "approval.decided", "approval.timed_out"
]


class ApprovalEvent(BaseModel):
    """One change to the set of pending approvals, as /events sends it."""

    type: EventType
    id: str
    session_id: str
    tool: str
    at: datetime
    """When the API noticed the change (its delay after the change is the delivery delay)."""
    approval: PendingApproval | None = None
    """For pending and updated: the approval's summary."""
    status: ApprovalStatus | None = None
    """For decided and timed out: how it ended (null when its record could not be read)."""
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    reason: str | None = None


# --- request bodies ----------------------------------------------------------------------------


class DecisionBody(BaseModel):
    """What every decision body may say; who decides is the token's reviewer."""

    model_config = ConfigDict(extra="forbid")

    reviewer: str | None = Field(default=None, max_length=MAX_REVIEWER_CHARS)
    """Who decides comes from your token; a name here must be yours (else 403)."""
    action_digest: str | None = Field(default=None, max_length=100)
    """Decide only if the action is still this one (the record's `action_digest`, or the
    digest of its modification); default: the action as it is now."""


class ApproveBody(DecisionBody):
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)
    scope: Literal["once", "action", "tool"] = "once"
    """`action`: approve this exact action for the rest of the run; `tool`: any call of
    this tool up to `max_risk` for the rest of the run (revoke with .../revoke)."""
    max_risk: int | None = Field(default=None, ge=0, le=100)


_BLANK = " \t\n\r\f\v"


class RejectBody(DecisionBody):
    reason: str = Field(
        max_length=MAX_REASON_CHARS,
        # Stated in the schema too; the validator below says it in words.
        json_schema_extra={"minLength": 1, "pattern": "[^ \\t\\n\\r\\f\\v]"},
    )
    """Why: the agent reads it."""

    @field_validator("reason")
    @classmethod
    def _given(cls, value: str) -> str:
        if not value.strip(_BLANK):
            raise ValueError("a reason is required: the agent reads it")
        return value


class ModifyBody(DecisionBody):
    args: dict[str, Any]
    """The new arguments, checked against the record's `args_schema` before sending."""
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)


class RevokeBody(DecisionBody):
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


BODY_EXAMPLES = {
    "approve": '{"comment": "old logs"}',
    "reject": '{"reason": "keep them for the audit"}',
    "modify": '{"args": {"paths": ["logs/a.log"]}}',
    "revoke": '{"reason": "no longer needed"}',
}
"""What to send, per decision route, for the sentence answering a body that is not JSON."""


class StartBody(BaseModel):
    """A run to start; who asks for it is the token's reviewer, never a field here."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS)
    workspace: str = Field(
        min_length=1,
        max_length=1000,
        description="A folder under the server's HITL_WORKSPACE_ROOT, as a path relative to it",
    )
    tools: list[str] | None = Field(
        default=None, max_length=64, description="Tool names; default every tool of the worker"
    )
    script: list[ScriptedTurn] | None = Field(
        default=None, description="Fixed turns for the offline scripted model"
    )
    model: str | None = Field(
        default=None,
        max_length=100,
        description="`scripted`, or a model name for the worker's own endpoint",
    )
    max_steps: int = Field(default=12, ge=1, le=1000)
    approval_timeout_seconds: float | None = Field(
        default=None, gt=0, description="Shorter than the worker's; never longer"
    )
    auto_approve_below: int | None = Field(
        default=None, ge=0, le=101, description="Lower than the worker's threshold; never higher"
    )
    id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:-]{1,200}$", description="The workflow id"
    )
