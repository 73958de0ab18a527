"""Pydantic models that cross process boundaries.

Everything here travels through Temporal payloads (workflow input and result,
activity input and output, signals and queries) or is printed by the reviewer's
tools, so fields are only ever added, with defaults, to stay compatible with
runs already in flight.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 30 * 60
SCRIPTED_MODEL_NAME = "scripted-offline"
SCRIPTED_BANNER = "[scripted model, offline: no LLM was called]"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- the model's side ---------------------------------------------------------


class ToolCall(BaseModel):
    """One tool call as the model proposed it; `arguments` is the raw JSON text."""

    id: str
    name: str
    arguments: str = "{}"


class ChatMessage(BaseModel):
    """A Chat Completions message, kept in the workflow as the conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None


class ScriptedTurn(BaseModel):
    """One assistant turn of a scripted (offline) model."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ModelSettings(BaseModel):
    """Which model plans the run. The API key never travels here: the worker reads it."""

    provider: Literal["openai", "scripted"] = "scripted"
    name: str = SCRIPTED_MODEL_NAME
    base_url: str | None = None
    """OpenAI-compatible endpoint; None means the worker's OPENAI_BASE_URL or OpenAI's."""
    script: list[ScriptedTurn] | None = None
    """Scripted provider only: fixed turns; None means the built-in task planner."""
    temperature: float | None = None


class LlmRequest(BaseModel):
    """Input of the `llm_next_step` activity."""

    model: ModelSettings
    messages: list[ChatMessage]
    tools: list[dict[str, Any]]
    """Tool schemas in Chat Completions form."""


class AssistantTurn(BaseModel):
    """What the model answered: text (the reasoning or final answer) and tool calls."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str = ""
    """The model that answered, as the server reported it."""
    scripted: bool = False
    usage: dict[str, int] = Field(default_factory=dict)


# --- tools --------------------------------------------------------------------


class ToolAction(BaseModel):
    """A tool name with validated arguments: the exact thing a reviewer approves."""

    tool: str
    args: dict[str, Any]

    def key(self) -> str:
        return canonical_json({"tool": self.tool, "args": self.args})

    def digest(self) -> str:
        return hashlib.sha256(self.key().encode()).hexdigest()[:16]


class ToolPreview(BaseModel):
    """A dry run's account of what an action would change."""

    summary: str
    """One line, e.g. "delete 3 files (1.2 MB)"."""
    details: str = ""
    """What the reviewer reads: the file list, a unified diff, the command line."""
    facts: dict[str, Any] = Field(default_factory=dict)
    """Structured data for the risk score and for checking the action still matches."""
    warnings: list[str] = Field(default_factory=list)


class ToolRequest(BaseModel):
    """Input of the `run_tool` and `preview_tool` activities."""

    action: ToolAction
    workspace: str
    idempotency_key: str | None = None
    """The approval id for approved actions: a retry never acts twice."""
    preview: ToolPreview | None = None
    """The preview the reviewer saw, so execution can refuse what changed since."""


class ToolResult(BaseModel):
    """What a tool did, returned to the model as the tool message."""

    ok: bool
    output: Any = None
    error: str | None = None
    summary: str = ""


# --- approvals ----------------------------------------------------------------


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    MODIFIED = "modified"


class ApprovalContext(BaseModel):
    """Why the action was proposed."""

    original_request: str
    reasoning: str = ""
    step: int = 0


class DecisionKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    TIMEOUT = "timeout"
    POLICY = "policy"


class DecisionEntry(BaseModel):
    """One decision as received, with what became of it."""

    decision_id: str | None = None
    kind: DecisionKind
    reviewer: str
    reason: str = ""
    args: dict[str, Any] | None = None
    received_at: datetime
    outcome: Literal["applied", "refused"]
    refusal: str | None = None
    """Why it was refused, in one sentence a reviewer can act on."""


class ApprovalRecord(BaseModel):
    """One approval checkpoint: the fields of an approvals table, plus context."""

    id: str
    session_id: str
    """The workflow id of the run."""
    run_id: str = ""
    action_json: ToolAction
    action_digest: str
    status: ApprovalStatus = ApprovalStatus.PENDING
    created_at: datetime
    expires_at: datetime
    reviewed_at: datetime | None = None
    reviewer: str | None = None
    modified_action_json: ToolAction | None = None
    reason: str | None = None
    context: ApprovalContext
    preview: ToolPreview
    modified_preview: ToolPreview | None = None
    risk: int = 0
    decisions: list[DecisionEntry] = Field(default_factory=list)
    executed_at: datetime | None = None
    result: ToolResult | None = None

    @property
    def effective_action(self) -> ToolAction:
        return self.modified_action_json or self.action_json

    def summary(self) -> PendingApproval:
        return PendingApproval(
            id=self.id,
            session_id=self.session_id,
            tool=self.action_json.tool,
            summary=self.preview.summary,
            risk=self.risk,
            created_at=self.created_at,
            expires_at=self.expires_at,
            action_json=self.action_json,
            action_digest=self.action_digest,
        )


class PendingApproval(BaseModel):
    """The short form kept in the memo, so listings need no per-run query."""

    id: str
    session_id: str
    tool: str
    summary: str
    """The preview's one-line summary; the full preview is in the `approvals` query."""
    risk: int
    created_at: datetime
    expires_at: datetime
    action_json: ToolAction | None = None
    action_digest: str | None = None


# --- decisions (signal payloads) ----------------------------------------------


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_id: str = Field(min_length=1)
    reviewer: str = Field(min_length=1)
    decision_id: str | None = None
    """Chosen by the sender to find its outcome in the decision log."""
    action_digest: str | None = None
    """If given, the decision applies only if the action is still this one."""


class ApproveDecision(_DecisionBase):
    kind: Literal["approve"] = "approve"
    comment: str = ""


class RejectDecision(_DecisionBase):
    kind: Literal["reject"] = "reject"
    reason: str = ""


class ModifyDecision(_DecisionBase):
    kind: Literal["modify"] = "modify"
    args: dict[str, Any]
    comment: str = ""


Decision = Annotated[ApproveDecision | RejectDecision | ModifyDecision, Field(discriminator="kind")]


# --- the run ------------------------------------------------------------------


class RunState(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    STEP_LIMIT = "step_limit"


class RunInput(BaseModel):
    """Input of `AgentWorkflow`."""

    task: str
    workspace: str
    """Absolute path the tools are confined to; the worker must see the same path."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    max_steps: int = Field(default=12, ge=1, le=200)
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """Per run: overrides every tool's own timeout."""
    tool_approval_timeouts: dict[str, float] = Field(default_factory=dict)
    """Per run and tool: overrides everything else for that tool."""
    auto_approve_below: int = Field(default=0, ge=0, le=101)
    """Flagged calls whose risk is below this are approved by policy (0: none)."""
    origin: dict[str, Any] = Field(default_factory=dict)
    """Who started the run and with what (command, versions), kept as evidence."""


class RefusedDecision(BaseModel):
    """A decision that named no approval of this run (unknown id or malformed)."""

    received_at: datetime
    payload: Any
    refusal: str


class RunStatus(BaseModel):
    """Answer of the `status` query."""

    state: RunState
    task: str
    step: int
    max_steps: int
    pending: list[PendingApproval]
    approvals_total: int
    refused_decisions: list[RefusedDecision] = Field(default_factory=list)
    answer: str | None = None


class ToolRun(BaseModel):
    """One executed (or refused) tool call, in order, for the evidence."""

    step: int
    call_id: str
    tool: str
    args: Any = None
    approval_id: str | None = None
    result: ToolResult


class RunResult(BaseModel):
    """What a finished run returns."""

    state: RunState
    answer: str
    steps: int
    approvals: list[ApprovalRecord]
    tool_runs: list[ToolRun]
    refused_decisions: list[RefusedDecision] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
