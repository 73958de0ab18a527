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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 30 * 60
SCRIPTED_MODEL_NAME = "scripted-offline"
SCRIPTED_BANNER = "[scripted model, offline: no LLM was called]"

# What a decision may carry, and what a run keeps of refused ones (docs/reliability.md).
MAX_ID_CHARS = 100
MAX_REVIEWER_CHARS = 100
MAX_REASON_CHARS = 2_000
MAX_DECISION_ARGS_BYTES = 64 * 1024
MAX_DECISION_BYTES = 96 * 1024
"""A decision payload larger than this is refused before it is looked at."""
MAX_REFUSED_PER_APPROVAL = 20
MAX_REFUSED_PER_RUN = 50
EXCERPT_CHARS = 300
"""What a refused payload leaves in the log: its first characters and its size."""
MAX_TASK_CHARS = 20_000
RESERVED_REVIEWER_PREFIXES = ("system:", "policy")
"""Names the run gives its own decisions; a decision from outside may not use them."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_digest(payload: Any) -> str:
    """A decision's payload as sent, in 16 hex digits (its `kind` left out: the signal or
    update it came as says that). Two copies of one decision (the `decide` update and its
    signal) have the same; a copy someone altered, or sent unsigned, has another."""
    fields = {k: v for k, v in payload.items() if k != "kind"} if isinstance(payload, dict) else {}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


class LlmRequest(BaseModel):
    """Input of the `llm_next_step` activity."""

    model: ModelSettings
    messages: list[ChatMessage]
    tools: list[dict[str, Any]]
    """Tool schemas in Chat Completions form."""
    step: int = 0
    """Which step of the run this is (1-based); 0 when the sender did not say."""


class AssistantTurn(BaseModel):
    """What the model answered: text (the reasoning or final answer) and tool calls."""

    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    model: str = ""
    """The model that answered, as the server reported it."""
    scripted: bool = False


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
    failed: bool = False
    """The dry run itself failed: the reviewer decides without it, and execution has
    nothing to check the workspace against, so change-checked tools refuse to act."""


class ToolDescriptor(BaseModel):
    """A tool as a run knows it: what the model is told and what the gate needs, no code.

    The run's input records these, so a run paused for days keeps the tools it began
    with; the `digest` lets a worker refuse a call to a tool that has changed since.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments."""
    digest: str
    """Hash of name, description, schema and flags."""
    approval: Literal["always", "never", "predicate"]
    read_only: bool = False
    idempotent: bool = True
    approval_timeout_seconds: float | None = None
    execution_timeout_seconds: float = 60.0
    quorum: int = 1
    """Distinct reviewers who must approve a call of this tool."""

    def chat_schema(self) -> dict[str, Any]:
        """The Chat Completions tool definition."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


MAX_EXTEND_SECONDS = 24 * 3600
"""The longest one extension at the deadline may hold an approval (`at_deadline = "extend"`)."""
MAX_ESCALATION_REVIEWERS = 50


class EscalationPolicy(BaseModel):
    """The worker's escalation policy for one approval (the reviewers file's
    `[[escalation]]`), computed by the worker's check; a run may only make it stricter
    (`hitl.policy.stricter_escalation`)."""

    remind_at: list[float] = Field(default_factory=list)
    """When to remind the reviewers, as fractions of the approval's time (0 < f < 1)."""
    escalate_after_seconds: float | None = None
    """Seconds after the approval opened when `to` are asked too (None: no escalation)."""
    to: list[str] = Field(default_factory=list)
    """The reviewers asked at `escalate_after_seconds` (a group resolved to names): from
    then on they may decide the approval even where the tool is not theirs."""
    at_deadline: Literal["reject", "extend"] = "reject"
    """What the deadline does: reject, or hold once for `extend_by_seconds`, then reject.
    Never approve."""
    extend_by_seconds: float = 0.0
    """The one extension's length (bounded by MAX_EXTEND_SECONDS)."""
    rule: str = ""
    """Which `[[escalation]]` rule of the worker's file this is, for the record."""
    working_hours: str | None = None
    """Set when the rule counts working time only: the hours (its times and the approval's
    deadline were computed over them by the worker's check, as calendar time)."""


class Escalation(BaseModel):
    """Who was asked about an approval, when, beyond its usual reviewers."""

    at: datetime
    to: list[str] = Field(default_factory=list)
    kind: Literal["escalated", "extended"] = "escalated"
    until: datetime | None = None
    """For an extension: the new deadline."""


class ToolCheck(BaseModel):
    """What the `check_tool` activity says of a proposed call, from the tool's own code.

    Evaluated outside workflow code and recorded in history, so a change to a tool's
    rules never changes what a replay decides.
    """

    ok: bool
    error: str | None = None
    """Why the call can't go ahead (invalid arguments, unknown or changed tool)."""
    invalid: str | None = None
    """For invalid arguments: what is wrong with them, field by field."""
    args: dict[str, Any] | None = None
    """The arguments as validated (defaults filled in)."""
    needs_approval: bool = True
    risk: int = 100
    preview: ToolPreview | None = None
    execution_timeout_seconds: float | None = None
    quorum: int = 1
    """The tool's own, raised by the reviewers' configuration for risky calls."""
    scope_key: str | None = None
    """What a standing approval granted on this call must match besides the tool (for
    commands: the program and its options), from the tool's `standing_scope`."""
    approval_timeout_seconds: float | None = None
    """The worker's approval timeout for this tool (its own, else the worker's default);
    a run's input may only shorten it."""
    auto_approve_below: int = 0
    """The worker's policy: flagged calls with a risk below this are approved by policy
    (0: none); a run's input may only lower it."""
    lapsed_grantors: dict[str, str] = Field(default_factory=dict)
    """Of the `standing_grantors` asked about, those whose standing approvals no longer
    cover this call (removed from the reviewers file, no longer allowed this tool or risk,
    standing approvals turned off), each with the reason."""
    previewed: bool = False
    """`check_call` only: the preview and risk are the worker's previewer's for this tool
    (False: a default preview of the arguments)."""
    escalation: EscalationPolicy | None = None
    """The worker's escalation policy for this call (reviewers file `[[escalation]]`)."""


class DecisionCheckRequest(BaseModel):
    """Input of the `verify_decision` activity: a decision as it came, and what it decides."""

    decision: dict[str, Any]
    tool: str
    risk: int
    requested_by: str = ""
    received_at: datetime
    kind: str | None = None
    """What the decision does, as the run read it (the signal's name says it for a
    payload that carries no `kind`): the reviewer rules depend on it."""
    escalated_to: list[str] = Field(default_factory=list)
    """Reviewers the approval was escalated to by now (its record's `escalations`): the
    authorizer lets them decide it even where the tool is not theirs."""


class DecisionCheck(BaseModel):
    refusal: str | None = None
    """Why the worker refuses the decision (signature, reviewer rules); None: accepted."""
    code: str | None = None
    """The refusal's `hitl.decisions.RefusalCode` (None: `not_allowed`)."""


class ToolCheckRequest(BaseModel):
    """Input of the `check_tool` activity."""

    tool: str
    digest: str | None = None
    args: Any
    workspace: str = ""
    modification: bool = False
    """Checking a reviewer's modified arguments: validate and preview, don't ask again."""
    workspace_root: str | None = None
    """The run's `RunInput.workspace_root`: the workspace is reached from it, no link followed."""
    standing_grantors: list[str] = Field(default_factory=list)
    """Reviewers whose standing approvals of this tool the run holds: the worker says which
    of them may no longer grant it (`ToolCheck.lapsed_grantors`)."""
    min_risk: int | None = None
    """`check_call` only: the risk the workflow asks for; the worker's is raised to it
    (never lowered), before the reviewers file's quorum rules apply."""


class ToolRequest(BaseModel):
    """Input of the `run_tool` and `preview_tool` activities."""

    action: ToolAction
    workspace: str
    idempotency_key: str | None = None
    """The approval id for approved actions: a retry never acts twice."""
    preview: ToolPreview | None = None
    """The preview the reviewer saw, so execution can refuse what changed since."""
    digest: str | None = None
    """The tool's descriptor digest when the run began: a changed tool is refused."""
    workspace_root: str | None = None
    """The run's `RunInput.workspace_root`: the workspace is reached from it, no link followed."""


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
    requested_by: str = ""
    """Who started the run; they may not approve its actions unless allowed to."""
    requester_verified: bool = False
    """`requested_by` was proven by a signed start the worker verified; otherwise it is
    only what the starting client claimed."""


class Vote(BaseModel):
    """One reviewer's approval towards an approval's quorum."""

    reviewer: str
    at: datetime
    action_digest: str
    """The action the vote was for: a modification starts the count again."""
    decision_id: str | None = None


class StandingApproval(BaseModel):
    """An approval that goes on approving: this exact action, or this tool up to a risk,
    for the rest of the run (its continue-as-new chain included), until revoked."""

    id: str
    """The approval it was granted with."""
    reviewer: str
    scope: Literal["action", "tool"]
    tool: str
    action_key: str | None = None
    max_risk: int = 100
    scope_key: str | None = None
    """For `tool` scope: the calls it covers must have this scope key too (for commands,
    the same program with the same options), so a grant on `ls -la` never covers `git`."""
    granted_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    uses: int = 0


class DecisionKind(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    TIMEOUT = "timeout"
    POLICY = "policy"
    REVOKE = "revoke"
    STANDING = "standing"


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
    code: str | None = None
    """Why it was refused, as a stable code (`hitl.decisions.RefusalCode`); None on entries
    recorded before codes existed."""
    excerpt: str | None = None
    """For a refused payload that could not be read as a decision: its first characters."""
    issuer: str | None = None
    """Who vouched for the reviewer's identity (the review API, or the reviewer's own key)."""
    scope: str | None = None
    """For an approval that keeps approving: `action` or `tool` (see StandingApproval)."""
    note: str | None = None
    """What the decision did short of deciding, e.g. "1 of 2 approvals"."""
    payload_digest: str | None = None
    """`payload_digest` of the decision as it came: the same decision sent again (as the
    signal after its update) is answered with this entry only if it is the same payload,
    so a copy of a decision id seen on a shared channel can't take the decision's place."""


class RuleVerdict(BaseModel):
    """What one of the worker's auto-approval rules said about a call.

    Acted on (`ApprovalRecord.rule`: the call was approved or denied without a person), or
    recorded beside the person's decision without acting (`ApprovalRecord.shadow`, a rule
    set in shadow mode), so `hitl stats` can say how often the rule and the people agree.
    """

    rule: str
    """The rule's name in the worker's configuration (a Cedar policy's id for Cedar)."""
    verdict: Literal["approve", "deny", "ask"]
    """`ask`: the rule passes the call to a person (also when it can't decide)."""
    reason: str = ""
    policy_digest: str = ""
    """Digest of the rule set as the worker loaded it: which version decided."""
    error: str | None = None
    """The rule failed (bad predicate, Cedar error): the verdict is then `ask`."""


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
    refused_dropped: int = 0
    """Refused decisions beyond the ones the log keeps (MAX_REFUSED_PER_APPROVAL)."""
    args_schema: dict[str, Any] | None = None
    """JSON Schema of the arguments, so a reviewer's tool checks a modification before
    sending it (the run checks it again with the tool's own code)."""
    quorum: int = 1
    """How many distinct reviewers must approve; one rejection rejects."""
    votes: list[Vote] = Field(default_factory=list)
    standing: str | None = None
    """Approved by a standing approval: the id of the approval it was granted with."""
    execution_timeout_seconds: float | None = None
    """How long the approved action may run."""
    scope_key: str | None = None
    """The tool's scope key for this action (`ToolCheck.scope_key`): what a standing
    approval granted on it covers."""
    expired: bool = False
    """Rejected because its time ran out (reviewer `system:timeout`), not by a person;
    `status` stays `rejected`. Set for records of older runs too, from their reviewer."""
    escalation: EscalationPolicy | None = None
    """The escalation policy this approval runs under (the worker's, made stricter by the
    run's ask), if any."""
    escalations: list[Escalation] = Field(default_factory=list)
    """Who was asked when beyond the usual reviewers, and any extension of the deadline."""
    rule: RuleVerdict | None = None
    """The worker's auto-approval rule that decided this approval without a person."""
    shadow: RuleVerdict | None = None
    """A rule set's verdict in shadow mode, recorded beside the person's decision."""

    @model_validator(mode="after")
    def _expired_from_reviewer(self) -> ApprovalRecord:
        # Records of runs made before `expired` existed say it by their reviewer.
        if (
            not self.expired
            and self.status == ApprovalStatus.REJECTED
            and self.reviewer == "system:timeout"
        ):
            self.expired = True
        return self

    @property
    def state_word(self) -> str:
        """The status as shown to people: `expired` for an approval nobody decided in
        time (its `status` stays `rejected`), else the status."""
        return "expired" if self.expired else self.status.value

    @property
    def outcome(self) -> Literal["pending", "approved", "modified", "rejected", "expired", "auto"]:
        """How the approval ended, in the words telemetry, stats, audit and backtests share:
        `auto` when no person decided it (the worker's policy or rules, or a standing
        approval a person granted earlier), `expired` when its time ran out, else the
        person's (or quorum's) decision."""
        if self.status is ApprovalStatus.PENDING:
            return "pending"
        if self.expired:
            return "expired"
        if self.rule is not None or self.standing is not None:
            return "auto"
        applied = [d for d in self.decisions if d.outcome == "applied"]
        if applied and applied[-1].kind in (DecisionKind.POLICY, DecisionKind.STANDING):
            return "auto"
        return self.status.value  # type: ignore[return-value]

    @property
    def escalated_to(self) -> list[str]:
        """Everyone the approval was escalated to so far."""
        names: list[str] = []
        for step in self.escalations:
            names.extend(name for name in step.to if name not in names)
        return names

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
            quorum=self.quorum,
            votes=len(self.votes),
            requested_by=self.context.requested_by,
            escalated_to=self.escalated_to,
        )


class NotifyEvent(BaseModel):
    """Input of the `notify_reviewers` activity: what happened to an approval."""

    event: Literal["pending", "reminder", "decided", "timed_out", "escalated", "extended", "voted"]
    """`escalated`: the record's last `escalations` entry says who was asked now;
    `extended`: its deadline was held once (`at_deadline = "extend"`); `voted`: a vote
    toward its quorum was recorded (`votes`), the approval still pending."""
    approval: ApprovalRecord
    at: datetime


class ApprovalOutcome(BaseModel):
    """What the gate answers a workflow that asked for approval."""

    approval_id: str
    status: ApprovalStatus
    action: ToolAction
    """The action to carry out: the proposed one, or the reviewer's modification."""
    reviewer: str | None = None
    reason: str | None = None
    timed_out: bool = False
    repeated: bool = False
    """Rejected at once: identical to an action rejected earlier (`approval_id` is that one)."""

    @property
    def approved(self) -> bool:
        return self.status in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED)


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
    quorum: int = 1
    votes: int = 0
    """Approvals so far, towards `quorum`."""
    requested_by: str = ""
    escalated_to: list[str] = Field(default_factory=list)
    """Reviewers the approval was escalated to: they may see and decide it."""


# --- decisions (signal payloads) ----------------------------------------------


def valid_reviewer_name(value: str) -> str:
    """`value` as a reviewer's name (trimmed), or ValueError saying why it can't be one."""
    name = value.strip()
    if not name:
        raise ValueError("a reviewer name is required")
    if not name.isprintable():
        raise ValueError("a reviewer name is printable text, with no control characters")
    folded = name.casefold()
    if any(folded.startswith(prefix) for prefix in RESERVED_REVIEWER_PREFIXES):
        raise ValueError(
            f"reviewer names starting with {' or '.join(RESERVED_REVIEWER_PREFIXES)} are "
            "reserved for decisions the run makes itself (timeouts, policy); use your own name"
        )
    return name


class _DecisionBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approval_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    reviewer: str = Field(min_length=1, max_length=MAX_REVIEWER_CHARS)
    decision_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    """Chosen by the sender to find its outcome in the decision log."""
    action_digest: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    """If given, the decision applies only if the action is still this one."""
    issuer: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    """Who signed the decision: the review API, or the reviewer with their own key."""
    issued_at: datetime | None = None
    signature: str | None = Field(default=None, max_length=200)
    """HMAC-SHA256 of the signed fields with the issuer's key (hitl.reviewers.sign)."""

    @field_validator("reviewer")
    @classmethod
    def _reviewer(cls, value: str) -> str:
        return valid_reviewer_name(value)


class ApproveDecision(_DecisionBase):
    kind: Literal["approve"] = "approve"
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)
    scope: Literal["once", "action", "tool"] = "once"
    """`action`: also approve this exact action for the rest of the run; `tool`: any call
    of this tool up to `max_risk`, for the rest of the run (a standing approval)."""
    max_risk: int | None = Field(default=None, ge=0, le=100)


class RevokeDecision(_DecisionBase):
    """Ends a standing approval (named by `approval_id`, the approval it was granted with)."""

    kind: Literal["revoke"] = "revoke"
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class RejectDecision(_DecisionBase):
    kind: Literal["reject"] = "reject"
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class ModifyDecision(_DecisionBase):
    kind: Literal["modify"] = "modify"
    args: dict[str, Any]
    comment: str = Field(default="", max_length=MAX_REASON_CHARS)

    @field_validator("args")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(canonical_json(value).encode())
        if size > MAX_DECISION_ARGS_BYTES:
            raise ValueError(
                f"the new arguments are {size:,} bytes; at most {MAX_DECISION_ARGS_BYTES:,}"
            )
        return value


# --- the run ------------------------------------------------------------------


class RunState(StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    STEP_LIMIT = "step_limit"
    FAILED = "failed"
    """A workflow that uses the gate ended with an error (set by the gate at its end)."""


class RunLimits(BaseModel):
    """Bounds that keep every payload of a run, and its history, from growing without end.

    Defaults suit real runs; tests shrink them to reach the limits quickly.
    """

    max_tool_calls_per_turn: int = Field(default=8, ge=1, le=64)
    """Calls beyond this in one model turn are not run; the model is told to ask for fewer."""
    max_action_bytes: int = Field(default=64 * 1024, ge=1024, le=512 * 1024)
    """A tool call whose arguments are larger is refused back to the model."""
    conversation_chars: int = Field(default=200_000, ge=10_000, le=1_000_000)
    """The conversation sent to the model keeps the newest steps that fit in this."""
    tool_message_chars: int = Field(default=16_000, ge=1_000, le=200_000)
    """One tool result as the model reads it; longer ones are cut with a note."""
    continue_as_new_events: int = Field(default=10_000, ge=200, le=40_000)
    continue_as_new_bytes: int = Field(default=16 * 1024 * 1024, ge=256 * 1024, le=40 * 1024 * 1024)
    approvals_per_run: int = Field(default=50, ge=2, le=500)
    """Approvals one run keeps before it continues as new (pending ones carry over)."""


class CallState(BaseModel):
    """One tool call of the turn in progress, as carried across continue-as-new."""

    call: ToolCall
    approval_id: str | None = None
    """Set while the call waits on this approval."""
    result: ToolResult | None = None
    """Set once the call has its result."""


class TurnState(BaseModel):
    step: int
    content: str = ""
    calls: list[CallState]


class RejectedAction(BaseModel):
    """What the gate remembers of a rejected action, to refuse an identical one at once."""

    approval_id: str
    reviewer: str
    reason: str


class GateState(BaseModel):
    """The gate's state carried across continue-as-new: pending approvals intact."""

    pending: list[ApprovalRecord] = Field(default_factory=list)
    standing: list[StandingApproval] = Field(default_factory=list)
    rejected: dict[str, RejectedAction] = Field(default_factory=dict)
    approvals_total: int = 0
    """Approvals over the whole chain of runs, this one included."""


class StartSignature(BaseModel):
    """A signed start: `issuer` vouches that `requested_by` asked for exactly this run."""

    issuer: str = Field(max_length=MAX_ID_CHARS)
    issued_at: str = Field(max_length=64)
    """ISO 8601, exactly as signed."""
    signature: str = Field(max_length=200)


class StartCheckRequest(BaseModel):
    """Input of the `verify_start` activity: the run's input as it came, and its id."""

    workflow_id: str
    run: dict[str, Any]
    """The run's input (without its carry), as the signature was made over it."""
    started_at: datetime
    """When the run started, as the server recorded it: a signature is valid 15 min."""
    continued_from: str | None = None
    """Set for a run that continued as new with a carry: the run id it continued from,
    which must be this workflow's own run on this task queue (its type and queue are below),
    or the carry was written by someone else's code."""
    workflow_type: str = ""
    task_queue: str = ""


class StartCheck(BaseModel):
    """What the worker says of a run's requester."""

    requested_by: str = ""
    """Who started the run, as the worker verified it; the claimed name when unverified."""
    verified: bool = False
    refusal: str | None = None
    """Why the run may not start here (the worker requires a signed start)."""


class AgentCarry(BaseModel):
    """Everything an agent run hands to the run it continues as."""

    messages: list[ChatMessage]
    """The conversation after the system prompt and the task, already trimmed."""
    omitted_steps: int = 0
    step: int
    turn: TurnState | None = None
    gate: GateState
    models_seen: list[str] = Field(default_factory=list)
    started_at: datetime
    previous_runs: list[str] = Field(default_factory=list)
    """Run ids of the earlier runs of this workflow id, oldest first (the last 20)."""
    requester: StartCheck | None = None
    """Who started the chain, as the worker verified it at its first run."""


class RunInput(BaseModel):
    """Input of `AgentWorkflow`."""

    task: str
    workspace: str
    """Absolute path the tools are confined to; the worker must see the same path."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    max_steps: int = Field(default=12, ge=1, le=1000)
    approval_timeout_seconds: float | None = Field(default=None, gt=0)
    """Per run: overrides every tool's own timeout."""
    tool_approval_timeouts: dict[str, float] = Field(default_factory=dict)
    """Per run and tool: overrides everything else for that tool."""
    auto_approve_below: int | None = Field(default=None, ge=0, le=101)
    """May only lower the worker's auto-approve threshold (its reviewers file `[policy]`);
    None: the worker's. 0: nothing is approved by policy in this run."""
    escalation: EscalationPolicy | None = None
    """The escalation this run asks for: it may only make the worker's stricter (no
    extension at the deadline, a shorter one, more reminders); who else is asked, and
    when, is the worker's alone (`hitl.policy.stricter_escalation`)."""
    origin: dict[str, Any] = Field(default_factory=dict)
    """Who started the run and with what (command, versions), kept as evidence."""
    requested_by: str = ""
    """Who started the run: recorded with every approval; they may not approve its actions
    unless the reviewers' configuration allows it for that tool."""
    tools: list[ToolDescriptor] | None = None
    """The tools this run may use, as recorded when it started; None: ask the worker
    (`tool_names`, or all it has) at the start of the run, which records the answer."""
    tool_names: list[str] | None = None
    tool_task_queues: dict[str, str] = Field(default_factory=dict)
    """Tools whose approved calls run on another task queue, e.g. commands on a worker
    that holds no secrets (docs/secrets.md)."""
    limits: RunLimits = Field(default_factory=RunLimits)
    carry: AgentCarry | None = None
    """Set only when a run continues as new: where the previous run stopped. A run
    started by a client with a carry is refused: only the run itself may write one."""
    workspace_root: str | None = None
    """The folder of workspaces the review API started this run under (its
    `HITL_WORKSPACE_ROOT`): the worker reaches `workspace` from it without following a
    symbolic link, so a link planted under it can't make the workspace `/`. Signed with
    the rest; a worker's own `HITL_WORKSPACE_ROOT` takes its place."""
    start_signature: StartSignature | None = None
    """Proof of who started the run (`requested_by`): the starter's own key, or the
    review API's for the reviewer it authenticated, over this input and workflow id."""


class RefusedDecision(BaseModel):
    """A decision that named no approval of this run (unknown id or malformed)."""

    received_at: datetime
    payload: Any = None
    """Version 1 kept the whole payload; now only `excerpt` and `size` are kept."""
    refusal: str
    code: str | None = None
    """`hitl.decisions.RefusalCode`: `unknown_approval` or `malformed`."""
    signal: str | None = None
    """The signal (or update) name it came as."""
    excerpt: str = ""
    """The payload's first characters, as JSON."""
    size: int = 0
    """The payload's size in bytes, as JSON."""


class GateStatus(BaseModel):
    """Answer of the `status` query for a workflow that uses the gate without its own."""

    state: str
    pending: list[PendingApproval]
    approvals_total: int
    refused_decisions: list[RefusedDecision] = Field(default_factory=list)
    refused_dropped: int = 0


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
    refused_dropped: int = 0
    previous_runs: list[str] = Field(default_factory=list)


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
    previous_runs: list[str] = Field(default_factory=list)
    """Earlier runs of this workflow id (continue-as-new); their approvals are queryable."""
