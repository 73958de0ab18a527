"""The approval gate: the workflow-side component every flagged action passes.

Create one in a workflow's `__init__` (decorated with `@workflow.init`) and ask it:

    outcome = await self.gate.request(action, preview=..., context=..., timeout=...)

It records the approval, publishes it (search attributes, memo, the Web UI's current
details), notifies reviewers, and waits for a decision with a durable timer that runs
from the moment the approval was created. It owns the decision handlers:

- signals `approve`, `reject`, `modify`: every input, of any arity, encoding, size
  or shape, ends as an applied or a refused decision with a bounded record. The
  handler never raises, so no signal can fail or wedge the run.
- queries `approvals` (every `ApprovalRecord` of this run) and, unless the workflow
  has its own, `status`.

Decisions are judged in the order they arrived; the first valid one wins; a decision
that arrives at or after the advertised deadline is refused as late. Everything here
is deterministic workflow code with no I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from hitl import contract, policy
    from hitl.decisions import DECISION_MODELS, current_digest
    from hitl.models import (
        DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        EXCERPT_CHARS,
        MAX_DECISION_BYTES,
        MAX_REFUSED_PER_APPROVAL,
        MAX_REFUSED_PER_RUN,
        ApprovalContext,
        ApprovalOutcome,
        ApprovalRecord,
        ApprovalStatus,
        ApproveDecision,
        CallState,
        DecisionCheck,
        DecisionCheckRequest,
        DecisionEntry,
        DecisionKind,
        GateState,
        GateStatus,
        ModifyDecision,
        NotifyEvent,
        PendingApproval,
        RefusedDecision,
        RejectDecision,
        RejectedAction,
        StandingApproval,
        ToolAction,
        ToolCheck,
        ToolCheckRequest,
        ToolDescriptor,
        ToolPreview,
        ToolRequest,
        ToolResult,
        Vote,
        canonical_json,
        payload_digest,
    )
    from hitl.text import clip, lone_surrogate, markdown_text, quoted

DECISION_SIGNALS = {
    contract.SIGNAL_APPROVE: DecisionKind.APPROVE,
    contract.SIGNAL_REJECT: DecisionKind.REJECT,
    contract.SIGNAL_MODIFY: DecisionKind.MODIFY,
    contract.SIGNAL_REVOKE: DecisionKind.REVOKE,
}
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_GRACE = timedelta(seconds=5)
VERIFY_TIMEOUT = timedelta(seconds=10)
MAX_REMEMBERED_REJECTIONS = 200
PATCH_QUEUED_ANSWERED = "hitl-queued-decisions-answered"
"""From here on a decision queued behind the one that settled its approval gets its
refusal as its answer (a `decide` update ends instead of waiting for ever)."""
PATCH_MODIFIED_RISK = "hitl-modified-risk-checked"
"""From here on a modification riskier than the proposed action is checked against the
reviewer's limits, and the quorum, at its own risk."""
PATCH_GATE_CLOSES = "hitl-gate-closes-itself"
"""From here on the gate ends with its workflow (HitlPlugin's interceptor): it publishes the
final state and lets the last notifications go out, also where the workflow forgot to."""
PATCH_TRUST = "hitl-trust-boundaries"
"""From here on the policy comes from the worker (its tools and reviewers file; a run's
input only makes it stricter), the requester from a verified start, a standing approval
on a tool covers only calls of the same scope key, policy never stands in for a quorum,
and a modification keeps what the reviewer wrote."""
MAX_MEMO_ACTION_CHARS = 2_000
"""A pending approval's action rides in the memo only if it is this small."""
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)

_GATES: weakref.WeakValueDictionary[str, ApprovalGate] = weakref.WeakValueDictionary()
"""The gate of each running workflow, by run id, for the interceptor that ends it."""

Validator = Callable[[dict[str, Any]], Any] | type[BaseModel]
"""Checks a reviewer's modified arguments: a pydantic model, or a function, sync or
async, that returns them normalized (a dict), or a `Modification` with a preview of the
new action, and raises ValidationError or ValueError (the message tells the reviewer what
is wrong) to refuse them."""


@dataclass(frozen=True)
class Modification:
    """A reviewer's modified arguments as checked: normalized, with their own preview."""

    args: dict[str, Any]
    preview: ToolPreview | None = None
    risk: int | None = None
    """The modified action's own risk, when the validator knows it (a tool's check does)."""
    quorum: int | None = None
    """The approvers the modified action needs, when the validator knows it."""


@dataclass
class _Incoming:
    kind: DecisionKind
    decision: Any
    received_at: datetime
    refused: DecisionEntry | None = None
    """Already refused on arrival (unreadable): logged in its turn, so the log keeps order."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The payload as it came: what a signature was made over."""
    entry: DecisionEntry | None = None
    """Set once the decision is logged, for an update waiting on its outcome."""


def _scope_text(standing: StandingApproval) -> str:
    if standing.scope == "action":
        return "this exact action"
    return f"{standing.tool} up to risk {standing.max_risk}"


def compact_record(record: ApprovalRecord, details_chars: int = 4_000) -> ApprovalRecord:
    """The record with its preview cut down, for payloads that carry many of them."""
    previews: dict[str, Any] = {}
    for name in ("preview", "modified_preview"):
        preview: ToolPreview | None = getattr(record, name)
        if preview is not None and (
            len(preview.details) > details_chars or len(json.dumps(preview.facts)) > 2_000
        ):
            previews[name] = preview.model_copy(
                update={"details": clip(preview.details, details_chars), "facts": {}}
            )
    # A copy: the record changes after this, the activity's input must not.
    return record.model_copy(update=previews, deep=True)


class ApprovalGate:
    """Approval checkpoints for one workflow run.

    `state` restores a gate carried across continue-as-new: pending approvals keep
    their ids, deadlines and decision logs. `status` answers the `status` query when
    the workflow has no handler of its own. `memo` is added to what the gate
    publishes (e.g. the run's task). `reminders`: when to remind the reviewers of an
    approval still pending, as fractions of its time (default: halfway).
    """

    def __init__(
        self,
        *,
        state: GateState | None = None,
        status: Callable[[], BaseModel] | None = None,
        memo: dict[str, Any] | None = None,
        reminders: Sequence[float] = (0.5,),
    ) -> None:
        state = state or GateState()
        self._records: dict[str, ApprovalRecord] = {record.id: record for record in state.pending}
        self._inbox: dict[str, list[_Incoming]] = {record.id: [] for record in state.pending}
        self._validators: dict[str, Validator | None] = {}
        self._rejected: dict[str, RejectedAction] = dict(state.rejected)
        self._standing: dict[str, StandingApproval] = {s.id: s for s in state.standing}
        self._revocations: list[_Incoming] = []
        self._approvals_total = state.approvals_total
        self._refused: list[RefusedDecision] = []
        self._refused_dropped = 0
        self._judging = 0
        self._run_state: str | None = None
        self._details: str | None = None
        self._memo = dict(memo or {})
        self._published: Any = None
        self._dirty = True
        self._notifications: set[asyncio.Task[None]] = set()
        self._reminders = sorted(fraction for fraction in reminders if 0 < fraction < 1)
        self._reminding: dict[str, asyncio.Task[None]] = {}
        # Approvals carried from an earlier run were announced by that run.
        self._announced: set[str] = set(self._records)
        self._previous_dynamic = workflow.get_dynamic_signal_handler()
        workflow.set_dynamic_signal_handler(self._on_signal)
        if workflow.get_update_handler(contract.UPDATE_DECIDE) is None:
            workflow.set_update_handler(
                contract.UPDATE_DECIDE, self._on_update, validator=self._validate_update
            )
        if workflow.get_query_handler(contract.QUERY_APPROVALS) is None:
            workflow.set_query_handler(contract.QUERY_APPROVALS, self.approvals)
        if workflow.get_query_handler(contract.QUERY_STATUS) is None:
            workflow.set_query_handler(contract.QUERY_STATUS, status or self.status)
        self._closed = False
        self._publisher = asyncio.create_task(self._publish_loop())
        self._revoker = asyncio.create_task(self._revoke_loop())
        _GATES[workflow.info().run_id] = self

    # --- asking -------------------------------------------------------------------------

    async def request(
        self,
        action: ToolAction,
        *,
        preview: ToolPreview | None = None,
        context: ApprovalContext | str | None = None,
        timeout: timedelta | None = None,
        risk: int = 50,
        validate: Validator | None = None,
        approved_by_policy: str | None = None,
        quorum: int = 1,
        args_schema: dict[str, Any] | None = None,
    ) -> ApprovalOutcome:
        """Ask for a decision on `action` and wait for it (or for the timeout).

        `validate` checks a reviewer's modified arguments; without it `modify` is
        refused. When it is a pydantic model, the record's `args_schema` is the model's
        JSON Schema (unless given), so reviewers' tools check a modification before
        sending it. `approved_by_policy` (a reason) records the approval as decided by
        policy instead of asking; it never stands in for a quorum (quorum > 1). An
        action identical to one rejected earlier in this run (or the runs it continued
        from) is rejected at once, with that reason.
        """
        earlier = self._rejected.get(action.key())
        if earlier is not None:
            return ApprovalOutcome(
                approval_id=earlier.approval_id,
                status=ApprovalStatus.REJECTED,
                action=action,
                reviewer=earlier.reviewer,
                reason=earlier.reason,
                repeated=True,
            )
        if (
            args_schema is None
            and isinstance(validate, type)
            and issubclass(validate, BaseModel)
            and workflow.patched(PATCH_TRUST)
        ):
            args_schema = schema_of(validate)
        record = self.open(
            action,
            preview=preview,
            context=context,
            timeout=timeout,
            risk=risk,
            validate=validate,
            quorum=quorum,
            args_schema=args_schema,
        )
        if approved_by_policy is not None:
            self.approve_by_policy(record.id, approved_by_policy)
        return await self.wait(record.id)

    def rejected_earlier(self, action: ToolAction) -> RejectedAction | None:
        """The earlier rejection of this exact action in this run's chain, if any."""
        return self._rejected.get(action.key())

    def approve_by_policy(self, approval_id: str, reason: str) -> None:
        """Decide a pending approval by the run's own policy instead of asking a reviewer."""
        record = self._records[approval_id]
        if record.status is not ApprovalStatus.PENDING:
            return
        if record.quorum > 1 and workflow.patched(PATCH_TRUST):
            # A quorum is N people; a policy is none of them.
            workflow.logger.warning(
                "Approval %s needs %d approvers; policy does not approve it",
                record.id,
                record.quorum,
            )
            return
        self._settle_by_system(
            record, DecisionKind.POLICY, ApprovalStatus.APPROVED, policy.POLICY_REVIEWER, reason
        )

    def open(
        self,
        action: ToolAction,
        *,
        preview: ToolPreview | None = None,
        context: ApprovalContext | str | None = None,
        timeout: timedelta | None = None,
        risk: int = 50,
        validate: Validator | None = None,
        args_schema: dict[str, Any] | None = None,
        execution_timeout: timedelta | None = None,
        quorum: int = 1,
        scope_key: str | None = None,
        lapsed: Mapping[str, str] | None = None,
    ) -> ApprovalRecord:
        """Record a pending approval; `wait` announces it and waits for its decision.

        A standing approval that covers the action decides it at once. `scope_key`
        narrows what a standing approval granted on this one covers (the tool's
        `standing_scope`: for commands, the program and its options).
        """
        now = workflow.now()
        info = workflow.info()
        if isinstance(context, str) or context is None:
            context = ApprovalContext(original_request=context or "")
        record = ApprovalRecord(
            id=f"apr_{workflow.uuid4().hex[:16]}",
            session_id=info.workflow_id,
            run_id=info.run_id,
            action_json=action,
            action_digest=action.digest(),
            created_at=now,
            expires_at=now + (timeout or timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS)),
            context=context,
            preview=preview or ToolPreview(summary=f"{action.tool}: no preview"),
            risk=max(0, min(100, int(risk))),
            args_schema=args_schema,
            execution_timeout_seconds=(
                execution_timeout.total_seconds() if execution_timeout is not None else None
            ),
            quorum=max(1, int(quorum)),
            scope_key=scope_key,
        )
        self._records[record.id] = record
        self._inbox[record.id] = []
        self._validators[record.id] = validate
        self._approvals_total += 1
        self._dirty = True
        standing = self._standing_for(record, lapsed or {})
        if standing is not None:
            standing.uses += 1
            record.standing = standing.id
            self._settle_by_system(
                record,
                DecisionKind.STANDING,
                ApprovalStatus.APPROVED,
                standing.reviewer,
                f"approved by {standing.reviewer}'s standing approval {standing.id} "
                f"({_scope_text(standing)}, for the rest of the run)",
            )
        return record

    async def wait(self, approval_id: str, validate: Validator | None = None) -> ApprovalOutcome:
        """Wait for the decision on a pending approval (also one carried from an earlier run)."""
        record = self._records[approval_id]
        if validate is not None:
            self._validators[approval_id] = validate
        if record.status is ApprovalStatus.PENDING:
            self._announce(record)
            await self._await_decision(record)
        if record.status is ApprovalStatus.REJECTED:
            self._remember_rejection(record)
        return self.outcome(approval_id)

    def outcome(self, approval_id: str) -> ApprovalOutcome:
        record = self._records[approval_id]
        return ApprovalOutcome(
            approval_id=record.id,
            status=record.status,
            action=record.effective_action,
            reviewer=record.reviewer,
            reason=record.reason,
            timed_out=record.reviewer == policy.TIMEOUT_REVIEWER,
        )

    def record(self, approval_id: str) -> ApprovalRecord:
        return self._records[approval_id]

    def touch(self) -> None:
        """Say that a record changed (a result, a modified preview): publish it."""
        self._dirty = True

    # --- waiting ------------------------------------------------------------------------

    def _announce(self, record: ApprovalRecord) -> None:
        if record.id not in self._announced:
            self._event(record, "pending")
        if record.id not in self._reminding and self._reminders:
            self._reminding[record.id] = asyncio.create_task(self._remind(record))
        self._announced.add(record.id)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    def _event(self, record: ApprovalRecord, event: str) -> None:
        """Tell the reviewers' channels; never waited for by the approval or its timer."""
        if record.id in self._announced or event == "pending":
            self._track(asyncio.create_task(self._send(record, event)))

    async def _send(self, record: ApprovalRecord, event: str) -> None:
        try:
            await workflow.execute_activity(
                contract.ACTIVITY_NOTIFY_EVENT,
                NotifyEvent(event=event, approval=compact_record(record), at=workflow.now()),
                start_to_close_timeout=NOTIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary=f"notify reviewers: {record.id} {event}",
            )
        except ActivityError as error:
            # A notification that can't be delivered must not cost the approval.
            workflow.logger.warning("Notification for %s failed: %s", record.id, error.cause)

    async def _remind(self, record: ApprovalRecord) -> None:
        """Reminders while nobody decides: by default at half the approval's time."""
        span = record.expires_at - record.created_at
        for fraction in self._reminders:
            moment = record.created_at + span * fraction
            wait = moment - workflow.now()
            if wait <= timedelta(0):
                continue
            await workflow.sleep(wait, summary=f"approval {record.id} reminder")
            if record.status is not ApprovalStatus.PENDING:
                return
            self._event(record, "reminder")

    async def _await_decision(self, record: ApprovalRecord) -> None:
        # The deadline the reviewer is shown is the deadline: the timer runs from the
        # record's creation, not from when the notification went out.
        remaining = record.expires_at - workflow.now()
        timer: asyncio.Task[None] | None = None
        if remaining > timedelta(0):
            timer = asyncio.create_task(
                workflow.sleep(remaining, summary=f"approval {record.id} deadline")
            )
        inbox = self._inbox[record.id]
        try:
            while record.status is ApprovalStatus.PENDING:
                if inbox:
                    await self._judge(record, inbox.pop(0))
                    continue
                if timer is None or timer.done():
                    self._expire(record)
                    break
                await workflow.wait_condition(_arrived_or_done(inbox, timer))
        finally:
            if timer is not None and not timer.done():
                timer.cancel()
            reminding = self._reminding.pop(record.id, None)
            if reminding is not None and not reminding.done():
                reminding.cancel()
        if record.id in self._announced:
            self._event(
                record, "timed_out" if record.reviewer == policy.TIMEOUT_REVIEWER else "decided"
            )
        answered = bool(inbox) and workflow.patched(PATCH_QUEUED_ANSWERED)
        while inbox:
            item = inbox.pop(0)
            if item.refused is None and self._twin(record, item):
                continue
            entry = item.refused or self._entry(item, policy.refusal_for_decided(record))
            self._log(record, entry, item if answered else None)

    def _expire(self, record: ApprovalRecord) -> None:
        timeout = record.expires_at - record.created_at
        self._settle_by_system(
            record,
            DecisionKind.TIMEOUT,
            ApprovalStatus.REJECTED,
            policy.TIMEOUT_REVIEWER,
            f"no decision came within {policy.duration_text(timeout)}; auto-rejected at "
            f"{record.expires_at.isoformat()}",
        )
        workflow.logger.warning("Approval %s timed out: %s", record.id, record.reason)

    async def _judge(self, record: ApprovalRecord, item: _Incoming) -> None:
        if item.refused is not None:
            self._log(record, item.refused, item)
            return
        decision = item.decision
        if self._twin(record, item):
            return
        if decision.decision_id and any(
            entry.decision_id == decision.decision_id
            # A refused copy (unsigned, altered) of a decision id someone saw on a shared
            # channel doesn't use the id up: only one that took effect does.
            and (entry.outcome == "applied" or not workflow.patched(PATCH_TRUST))
            for entry in record.decisions
        ):
            self._log(
                record,
                self._entry(item, f"decision {quoted(decision.decision_id)} was already received"),
                item,
            )
            return
        validate = self._validators.get(record.id)
        verdict = policy.judge(record, decision, item.received_at, validate is not None)
        refusal, modification = verdict.refusal, None
        self._judging += 1
        try:
            if refusal is None:
                refusal = await self._verify(
                    item, record.action_json.tool, record.risk, record.context.requested_by
                )
            if refusal is None:
                refusal = self._vote_refusal(record, decision)
            if refusal is None and verdict.check_args is not None and validate is not None:
                try:
                    modification = await _modification(validate, verdict.check_args)
                except Exception as error:  # the tool's code refuses, in its own words
                    refusal = policy.modification_refusal(record, error)
            if refusal is None and modification is not None:
                refusal = await self._check_riskier(record, item, modification)
        finally:
            self._judging -= 1
        if refusal:
            self._log(record, self._entry(item, refusal), item)
            return
        if isinstance(decision, RejectDecision):
            self._apply(record, item, ApprovalStatus.REJECTED, decision.reason or "no reason given")
        elif modification is not None:
            record.modified_action_json = ToolAction(
                tool=record.action_json.tool, args=modification.args
            )
            record.modified_preview = modification.preview
            if record.quorum > 1:
                # The count starts again for the new arguments; the modifier's is the first.
                record.votes = [self._vote(record, item)]
            self._count(record, item, ApprovalStatus.MODIFIED)
        elif record.quorum > 1:
            record.votes.append(self._vote(record, item))
            self._count(
                record,
                item,
                ApprovalStatus.MODIFIED if record.modified_action_json else ApprovalStatus.APPROVED,
            )
        else:
            self._apply(record, item, ApprovalStatus.APPROVED, decision.comment or None)
            self._grant(record, decision)

    async def _check_riskier(
        self, record: ApprovalRecord, item: _Incoming, modification: Modification
    ) -> str | None:
        """A modification is a decision on the action it makes: one riskier than the
        proposed action is judged at its own risk (the reviewer's limit), and needs the
        approvers that risk needs. The record then shows the higher risk and quorum."""
        risk = max(record.risk, modification.risk or 0)
        quorum = max(record.quorum, modification.quorum or 1)
        if (risk, quorum) == (record.risk, record.quorum):
            return None
        if not workflow.patched(PATCH_MODIFIED_RISK):
            return None
        if risk > record.risk:
            refusal = await self._verify(
                item, record.action_json.tool, risk, record.context.requested_by
            )
            if refusal is not None:
                return f"the modified action scores risk {risk}: {refusal}"
        record.risk, record.quorum = risk, quorum
        return None

    def _twin(self, record: ApprovalRecord, item: _Incoming) -> bool:
        """The same decision a second time (the reviewer's library sends a `decide` update
        and, when no worker took it in time, the same decision as a durable signal): it
        is answered with the first one's entry and leaves nothing in the log."""
        decision = item.decision
        if not decision.decision_id:
            return False
        digest = payload_digest(item.fields)
        for entry in record.decisions:
            if (
                entry.decision_id == decision.decision_id
                and entry.kind is item.kind
                and entry.reviewer == decision.reviewer
                and entry.args == (decision.args if isinstance(decision, ModifyDecision) else None)
                # The same payload, signature and all: a copy sent unsigned or altered
                # first must not answer for the real decision.
                and entry.payload_digest == digest
                and workflow.patched(PATCH_TRUST)
            ):
                item.entry = entry
                return True
        return False

    def _vote_refusal(self, record: ApprovalRecord, decision: Any) -> str | None:
        if record.quorum <= 1:
            if isinstance(decision, ApproveDecision) and decision.scope != "once" and record.votes:
                return "a standing approval can't be granted on an approval that needs a quorum"
            return None
        if isinstance(decision, ApproveDecision):
            if decision.scope != "once":
                return (
                    f"approval {record.id} needs {record.quorum} approvers; a standing approval "
                    "can't stand in for them"
                )
            digest = current_digest(record)
            if any(
                v.reviewer == decision.reviewer and v.action_digest == digest for v in record.votes
            ):
                return (
                    f"{quoted(decision.reviewer)} has already approved this action; it needs "
                    f"{record.quorum} different approvers"
                )
        return None

    def _vote(self, record: ApprovalRecord, item: _Incoming) -> Vote:
        return Vote(
            reviewer=item.decision.reviewer,
            at=item.received_at,
            action_digest=current_digest(record),
            decision_id=item.decision.decision_id,
        )

    def _count(self, record: ApprovalRecord, item: _Incoming, status: ApprovalStatus) -> None:
        """A vote (or a modification) towards the quorum: decided once there are enough."""
        votes = len(record.votes)
        if record.quorum <= 1 or votes >= record.quorum:
            note = f"{votes} of {record.quorum} approvals" if record.quorum > 1 else None
            reviewers = ", ".join(v.reviewer for v in record.votes) if record.quorum > 1 else None
            self._apply(record, item, status, item.decision.comment or None, note, reviewers)
            return
        entry = self._entry(item, None, note=f"{votes} of {record.quorum} approvals")
        record.decisions.append(entry)
        item.entry = entry
        self._dirty = True
        workflow.logger.info("Approval %s: %d of %d approvals", record.id, votes, record.quorum)

    def _apply(
        self,
        record: ApprovalRecord,
        item: _Incoming,
        status: ApprovalStatus,
        reason: str | None,
        note: str | None = None,
        reviewers: str | None = None,
    ) -> None:
        entry = self._entry(item, None, note=note)
        record.decisions.append(entry)
        item.entry = entry
        record.reviewer = reviewers or item.decision.reviewer
        record.reviewed_at = workflow.now()
        record.reason = reason
        record.status = status
        self._dirty = True
        workflow.logger.info("Approval %s %s by %s", record.id, status.value, record.reviewer)

    def _grant(self, record: ApprovalRecord, decision: Any) -> None:
        """An approval that keeps approving: this action, or this tool up to a risk."""
        if not isinstance(decision, ApproveDecision) or decision.scope == "once":
            return
        self._standing[record.id] = StandingApproval(
            id=record.id,
            reviewer=decision.reviewer,
            scope=decision.scope,
            tool=record.action_json.tool,
            action_key=record.action_json.key() if decision.scope == "action" else None,
            max_risk=record.risk if decision.max_risk is None else decision.max_risk,
            scope_key=record.scope_key if decision.scope == "tool" else None,
            granted_at=workflow.now(),
        )

    def standing_grantors(self, tool: str) -> list[str]:
        """Who granted the standing approvals of `tool` still in force in this run."""
        return sorted(
            {s.reviewer for s in self._standing.values() if s.tool == tool and not s.revoked_at}
        )

    def _standing_for(
        self, record: ApprovalRecord, lapsed: Mapping[str, str]
    ) -> StandingApproval | None:
        if record.quorum > 1:
            return None
        for standing in self._standing.values():
            if standing.revoked_at is not None or standing.tool != record.action_json.tool:
                continue
            if standing.reviewer in lapsed:
                # The grant is only as good as its grantor is now: removed from the
                # reviewers file, or no longer allowed this, it covers nothing more.
                continue
            if standing.scope == "action" and standing.action_key == record.action_json.key():
                return standing
            if standing.scope == "tool" and record.risk <= standing.max_risk:
                # Same scope key or nothing: a grant on `ls -la` never covers `git`. A
                # record without one (a tool with no `standing_scope`) matches a grant
                # without one.
                if standing.scope_key == record.scope_key or not workflow.patched(PATCH_TRUST):
                    return standing
        return None

    def _settle_by_system(
        self,
        record: ApprovalRecord,
        kind: DecisionKind,
        status: ApprovalStatus,
        reviewer: str,
        reason: str,
    ) -> None:
        """A decision the run makes itself (policy, timeout), logged like a reviewer's."""
        now = workflow.now()
        record.status, record.reviewer, record.reviewed_at, record.reason = (
            status,
            reviewer,
            now,
            reason,
        )
        record.decisions.append(
            DecisionEntry(
                kind=kind, reviewer=reviewer, reason=reason, received_at=now, outcome="applied"
            )
        )
        self._dirty = True

    def _remember_rejection(self, record: ApprovalRecord) -> None:
        self._rejected[record.action_json.key()] = RejectedAction(
            approval_id=record.id,
            reviewer=record.reviewer or "unknown",
            reason=clip(record.reason or "", 500),
        )
        while len(self._rejected) > MAX_REMEMBERED_REJECTIONS:
            del self._rejected[next(iter(self._rejected))]

    # --- receiving decisions --------------------------------------------------------------

    def _on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        kind = DECISION_SIGNALS.get(name)
        if kind is None:
            if self._previous_dynamic is not None:
                self._previous_dynamic(name, args)
                return
            self._refuse_unattached(
                name,
                None,
                f"{quoted(name)} is not a signal this run handles; decisions are sent as "
                "approve, reject or modify",
            )
            return
        try:
            self.receive(kind, args, name)
        except Exception as error:  # no input may fail the run
            self._refuse_unattached(
                name, None, f"the {name} signal could not be read: {type(error).__name__}"
            )

    def receive(self, kind: DecisionKind, args: Sequence[RawValue], name: str) -> None:
        """Take one signalled decision as it arrived: queue it for judging, or refuse it now."""
        if len(args) != 1:
            self._refuse_unattached(
                name,
                None,
                f"a {name} decision is one JSON object with approval_id and reviewer; this "
                f"one carried {len(args)} values",
            )
            return
        try:
            value = workflow.payload_converter().from_payload(args[0].payload)
        except Exception as error:  # any encoding may arrive
            encoding = args[0].payload.metadata.get("encoding", b"").decode(errors="replace")
            self._refuse_unattached(
                name,
                None,
                f"the {name} payload could not be decoded (encoding {quoted(encoding)}): "
                f"{clip(str(error), 200)}",
            )
            return
        self._take(kind, value, name)

    def _take(self, kind: DecisionKind, value: Any, name: str) -> _Incoming | None:
        """A decoded decision: queued for its approval (returned), or refused now (None)."""
        # ASCII JSON: whatever the payload holds (lone surrogates too), the excerpt kept of
        # it can always be written to history.
        text = json.dumps(value, default=str)
        excerpt, size = clip(text, EXCERPT_CHARS), len(text)
        fields: dict[str, Any] = value if isinstance(value, dict) else {}
        approval_id = fields.get("approval_id")
        record = self._records.get(approval_id) if isinstance(approval_id, str) else None
        refusal = self._read_refusal(kind, name, value, size)
        decision = None
        if refusal is None:
            decision, refusal = self._validate(kind, fields)
        now = workflow.now()
        if kind is DecisionKind.REVOKE and refusal is None:
            return self._take_revoke(decision, fields, now, name, (excerpt, size))
        if refusal is not None:
            if record is None:
                self._refuse_unattached(name, (excerpt, size), refusal)
                return None
            entry = DecisionEntry(
                decision_id=_text(fields.get("decision_id")),
                kind=kind,
                reviewer=_text(fields.get("reviewer")) or "unknown",
                received_at=now,
                outcome="refused",
                refusal=refusal,
                excerpt=excerpt,
            )
            item = _Incoming(kind, None, now, entry, fields)
            if record.status is ApprovalStatus.PENDING:
                self._inbox[record.id].append(item)
            else:
                self._log(record, entry, item)
            return item
        if record is None:
            self._refuse_unattached(
                name,
                (excerpt, size),
                f"unknown approval id {quoted(approval_id)}: this run's approvals are "
                f"{self._known_ids()}",
            )
            return None
        item = _Incoming(kind, decision, now, fields=dict(fields))
        if record.status is not ApprovalStatus.PENDING:
            if not self._twin(record, item):
                self._log(record, self._entry(item, policy.refusal_for_decided(record)), item)
            return item
        self._inbox[record.id].append(item)
        return item

    def _take_revoke(
        self,
        decision: Any,
        fields: dict[str, Any],
        now: datetime,
        name: str,
        payload: tuple[str, int],
    ) -> _Incoming | None:
        standing = self._standing.get(decision.approval_id)
        if standing is None:
            known = ", ".join(s.id for s in self._standing.values() if s.revoked_at is None)
            self._refuse_unattached(
                name,
                payload,
                f"no standing approval {quoted(decision.approval_id)} in this run; the standing "
                f"approvals are: {known or 'none'}",
            )
            return None
        item = _Incoming(DecisionKind.REVOKE, decision, now, fields=dict(fields))
        self._revocations.append(item)
        return item

    async def _revoke_loop(self) -> None:
        # Revocations are judged one after another, like decisions on an approval.
        while True:
            await workflow.wait_condition(lambda: bool(self._revocations))
            item = self._revocations.pop(0)
            self._judging += 1
            try:
                await self._revoke(item)
            finally:
                self._judging -= 1

    async def _revoke(self, item: _Incoming) -> None:
        standing = self._standing[item.decision.approval_id]
        refusal = None
        if standing.revoked_at is not None:
            refusal = (
                f"standing approval {standing.id} was already revoked by "
                f"{quoted(standing.revoked_by or 'unknown')} at {standing.revoked_at.isoformat()}"
            )
        else:
            refusal = await self._verify(item, standing.tool, standing.max_risk, "")
        entry = DecisionEntry(
            decision_id=item.decision.decision_id,
            kind=DecisionKind.REVOKE,
            reviewer=item.decision.reviewer,
            reason=item.decision.reason,
            received_at=item.received_at,
            outcome="refused" if refusal else "applied",
            refusal=refusal,
            issuer=item.decision.issuer,
        )
        if refusal is None:
            standing.revoked_at, standing.revoked_by = workflow.now(), item.decision.reviewer
            self._dirty = True
        record = self._records.get(standing.id)
        if record is not None:
            if refusal:
                self._log(record, entry, item)
            else:
                record.decisions.append(entry)
                item.entry = entry
        else:
            item.entry = entry
            if refusal:
                self._refuse_unattached("revoke", None, refusal)

    async def _verify(self, item: _Incoming, tool: str, risk: int, requested_by: str) -> str | None:
        """Why the worker refuses this decision (signature, reviewer rules), or None.

        Checked in a local activity: the keys and the reviewers file stay on the worker,
        and the answer is recorded, so a replay decides the same.
        """
        try:
            result: DecisionCheck = await workflow.execute_local_activity(
                contract.ACTIVITY_VERIFY_DECISION,
                DecisionCheckRequest(
                    decision=item.fields,
                    tool=tool,
                    risk=risk,
                    requested_by=requested_by,
                    received_at=item.received_at,
                ),
                result_type=DecisionCheck,
                start_to_close_timeout=VERIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary="verify decision",
            )
        except ActivityError as error:
            return clip(f"the decision could not be verified: {error.cause}", 300)
        return result.refusal

    @staticmethod
    def _read_refusal(kind: DecisionKind, name: str, value: Any, size: int) -> str | None:
        if lone_surrogate(value) is not None:
            return (
                f"the {name} payload contains text that is not valid Unicode (a lone "
                "surrogate escape such as \\udc9b); send it as plain UTF-8 text"
            )
        if size > MAX_DECISION_BYTES:
            return (
                f"the {name} payload is {size:,} bytes; a decision is at most "
                f"{MAX_DECISION_BYTES:,} bytes"
            )
        if not isinstance(value, dict):
            return (
                f"malformed {name} decision: expected a JSON object with approval_id and "
                f"reviewer, got {type(value).__name__}"
            )
        sent = value.get("kind")
        if sent is not None and sent != kind.value:
            return (
                f"the payload says kind {quoted(sent)} but was sent as {kind.value}; send "
                "each decision as the signal it means"
            )
        return None

    @staticmethod
    def _validate(kind: DecisionKind, fields: dict[str, Any]) -> tuple[Any, str | None]:
        try:
            return DECISION_MODELS[kind].model_validate(fields), None
        except ValidationError as error:
            return None, (
                f"malformed {kind.value} decision: {policy.format_validation_error(error)}"
            )

    # --- the decide update ----------------------------------------------------------------

    def _validate_update(self, payload: Any) -> None:
        """Refuse, before it reaches history, a decision that can't be read or names nothing.

        What can be judged (late, already decided, wrong digest, not allowed) is accepted
        and refused into the decision log, so the audit shows the attempt.
        """
        if not isinstance(payload, dict):
            raise ValueError("a decision is a JSON object with kind, approval_id and reviewer")
        try:
            kind = DecisionKind(str(payload.get("kind")))
        except ValueError:
            raise ValueError("kind is approve, reject, modify or revoke") from None
        if kind not in DECISION_SIGNALS.values():
            raise ValueError("kind is approve, reject, modify or revoke")
        text = json.dumps(payload, default=str)
        refusal = self._read_refusal(kind, kind.value, payload, len(text))
        if refusal is None:
            fields = {k: v for k, v in payload.items() if k != "kind"}
            _, refusal = self._validate(kind, fields)
        if refusal is not None:
            raise ValueError(refusal)
        approval_id = payload.get("approval_id")
        known = self._standing if kind is DecisionKind.REVOKE else self._records
        if approval_id not in known:
            raise ValueError(f"unknown approval id {quoted(approval_id)} in this run")

    async def _on_update(self, payload: Any) -> DecisionEntry:
        kind = DecisionKind(payload["kind"])
        item = self._take(kind, payload, contract.UPDATE_DECIDE)
        if item is None:  # the validator let through only what names something here
            raise ApplicationError("the decision names nothing in this run", non_retryable=True)
        await workflow.wait_condition(lambda: item.entry is not None)
        assert item.entry is not None
        return item.entry

    def _entry(
        self, item: _Incoming, refusal: str | None, note: str | None = None
    ) -> DecisionEntry:
        decision = item.decision
        return DecisionEntry(
            decision_id=decision.decision_id,
            kind=item.kind,
            reviewer=decision.reviewer,
            reason=decision.reason if isinstance(decision, RejectDecision) else decision.comment,
            args=decision.args if isinstance(decision, ModifyDecision) else None,
            received_at=item.received_at,
            outcome="refused" if refusal else "applied",
            refusal=refusal,
            issuer=decision.issuer,
            scope=getattr(decision, "scope", None) if not refusal else None,
            note=note,
            payload_digest=payload_digest(item.fields),
        )

    def _log(
        self, record: ApprovalRecord, entry: DecisionEntry, item: _Incoming | None = None
    ) -> None:
        """Keep a refused decision in the approval's log, bounded in count and size."""
        if item is not None:
            item.entry = entry
        refused = sum(1 for item in record.decisions if item.outcome == "refused")
        if refused >= MAX_REFUSED_PER_APPROVAL:
            record.refused_dropped += 1
        else:
            if entry.args is not None and len(json.dumps(entry.args)) > EXCERPT_CHARS:
                entry.excerpt = clip(json.dumps(entry.args, ensure_ascii=False), EXCERPT_CHARS)
                entry.args = None
            entry.reason = clip(entry.reason, EXCERPT_CHARS)
            record.decisions.append(entry)
        self._dirty = True
        workflow.logger.warning(
            "Refused decision on %s: %s", record.id, clip(entry.refusal or "", 300)
        )

    def _refuse_unattached(self, name: str, payload: tuple[str, int] | None, refusal: str) -> None:
        if len(self._refused) >= MAX_REFUSED_PER_RUN:
            self._refused_dropped += 1
        else:
            excerpt, size = payload or ("", 0)
            self._refused.append(
                RefusedDecision(
                    received_at=workflow.now(),
                    refusal=refusal,
                    signal=clip(name, 100),
                    excerpt=excerpt,
                    size=size,
                )
            )
        workflow.logger.warning("Refused decision: %s", clip(refusal, 300))

    def _known_ids(self) -> str:
        pending = [r.id for r in self._records.values() if r.status is ApprovalStatus.PENDING]
        if not self._records:
            return "none yet"
        shown = ", ".join(pending[:10]) or "none pending"
        return f"{shown} ({len(self._records)} in all; `hitl pending` lists them)"

    # --- queries and state ------------------------------------------------------------------

    def approvals(self, selector: Any = None) -> list[ApprovalRecord]:
        """Every approval record of this run; `{"ids": [...]}` or `{"status": S}` narrows it."""
        records = list(self._records.values())
        if isinstance(selector, dict):
            ids = selector.get("ids")
            if isinstance(ids, list):
                wanted = {str(item) for item in ids}
                records = [record for record in records if record.id in wanted]
            status = selector.get("status")
            if isinstance(status, str):
                records = [record for record in records if record.status.value == status]
        return records

    def pending(self) -> list[PendingApproval]:
        return [
            self._summary(record)
            for record in self._records.values()
            if record.status is ApprovalStatus.PENDING
        ]

    def status(self) -> GateStatus:
        return GateStatus(
            state=self.run_state(),
            pending=self.pending(),
            approvals_total=self._approvals_total,
            refused_decisions=self._refused,
            refused_dropped=self._refused_dropped,
        )

    @property
    def records(self) -> list[ApprovalRecord]:
        return list(self._records.values())

    @property
    def refused(self) -> list[RefusedDecision]:
        return self._refused

    @property
    def refused_dropped(self) -> int:
        return self._refused_dropped

    @property
    def approvals_total(self) -> int:
        return self._approvals_total

    def idle(self) -> bool:
        """No decision is waiting to be judged or being judged: safe to continue as new."""
        return self._judging == 0 and not self._revocations and not any(self._inbox.values())

    async def settle(self) -> None:
        """Wait until no revocation waits or is being judged, so a snapshot carries it.

        Decisions on pending approvals are judged by whoever waits on the approval; a
        revocation has no waiter, so without this one sent just before a run continues
        as new would be lost with the old run.
        """
        if workflow.patched(PATCH_TRUST):
            await workflow.wait_condition(lambda: not self._revocations and self._judging == 0)

    def snapshot(self) -> GateState:
        """What a continued run needs: pending approvals intact, remembered rejections."""
        return GateState(
            pending=[r for r in self._records.values() if r.status is ApprovalStatus.PENDING],
            rejected=self._rejected,
            standing=list(self._standing.values()),
            approvals_total=self._approvals_total,
        )

    # --- visibility -----------------------------------------------------------------------

    def set_run_state(self, state: str | None, details: str | None = None) -> None:
        """The workflow's own state and current details, shown when nothing is pending."""
        self._run_state, self._details = state, details
        self._dirty = True

    def run_state(self) -> str:
        """The workflow's final state once it has one, else whether it waits on a reviewer."""
        if self._run_state not in (None, "running"):
            return str(self._run_state)
        waiting = any(r.status is ApprovalStatus.PENDING for r in self._records.values())
        return "awaiting_approval" if waiting else "running"

    def _summary(self, record: ApprovalRecord) -> PendingApproval:
        summary = record.summary()
        summary.summary = clip(summary.summary, 200)
        if (
            summary.action_json is not None
            and len(summary.action_json.key()) > MAX_MEMO_ACTION_CHARS
        ):
            summary.action_json = None
        return summary

    async def _publish_loop(self) -> None:
        # Woken once per workflow task at most: every change made while the task runs
        # is published together, not once per change.
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self.publish()

    def publish(self) -> None:
        """Mirror the approval state to search attributes, memo and current details now."""
        self._dirty = False
        pending = self.pending()
        state = self.run_state()
        ids = list(self._records)
        memo = {
            contract.MEMO_PENDING: [item.model_dump(mode="json") for item in pending],
            **self._memo,
        }
        if pending:
            details = "\n".join(
                f"awaiting approval: {markdown_text(item.tool)}, {markdown_text(item.summary)}, "
                f"expires {item.expires_at:%H:%M} UTC ({item.id})"
                for item in pending
            )
        else:
            details = markdown_text(self._details or state)
        published = (state, len(pending), ids, memo, details)
        if published == self._published:
            return
        previous = self._published
        self._published = published
        if previous is None or previous[:3] != published[:3]:
            workflow.upsert_search_attributes(
                [
                    contract.STATE_KEY.value_set(state),
                    contract.PENDING_KEY.value_set(len(pending)),
                    contract.APPROVAL_IDS_KEY.value_set(ids),
                ]
            )
        if previous is None or previous[3] != memo:
            workflow.upsert_memo(memo)
        workflow.set_current_details(details)

    async def close(self) -> None:
        """Publish the final state, and give notifications in flight a short while.

        Called by the plugin's interceptor when the workflow returns (and by workflows
        that end it themselves); a second call does nothing.
        """
        if self._closed:
            return
        self._closed = True
        if self._notifications:
            # Channels retry only for seconds; a channel that is down costs this much at most.
            try:
                await workflow.wait_condition(
                    lambda: not self._notifications,
                    timeout=NOTIFY_GRACE,
                    timeout_summary="notifications",
                )
            except TimeoutError:
                workflow.logger.warning(
                    "%d notification(s) still in flight when the run ended; not waited for",
                    len(self._notifications),
                )
        for task in list(self._notifications):
            task.cancel()
        self.publish()


def schema_of(model: type[BaseModel]) -> dict[str, Any] | None:
    """A model's JSON Schema as a record's `args_schema`; None if it can't be made."""
    try:
        schema = model.model_json_schema()
    except Exception:  # a model with types JSON Schema can't describe: no schema, no crash
        return None
    schema.pop("title", None)
    return schema


async def _modification(validate: Validator, args: dict[str, Any]) -> Modification:
    if isinstance(validate, type) and issubclass(validate, BaseModel):
        checked = validate.model_validate(args)
        # What the reviewer wrote, checked and normalized, without defaults they never
        # saw: the action is what they decided.
        keep_written = workflow.patched(PATCH_TRUST)
        return Modification(checked.model_dump(mode="json", exclude_unset=keep_written))
    result = validate(args)  # type: ignore[call-arg]
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, Modification):
        return result
    if isinstance(result, BaseModel):
        return Modification(result.model_dump(mode="json"))
    if not isinstance(result, dict):
        raise TypeError(f"the validator returned {type(result).__name__}, not the arguments")
    return Modification(result)


def _arrived_or_done(inbox: list[_Incoming], timer: asyncio.Task[None]) -> Callable[[], bool]:
    return lambda: bool(inbox) or timer.done()


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return clip(value.encode("utf-8", "backslashreplace").decode("utf-8"), 100)


# --- tool calls through the gate -------------------------------------------------------------

TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""Tool activities heartbeat every 2 s, so a worker that dies is noticed in seconds."""
CHECK_TIMEOUT = timedelta(minutes=2)


@dataclass(frozen=True)
class ToolCallOptions:
    """What a run decides about its tool calls (the rest is each tool's own)."""

    workspace: str = ""
    approval_timeout: float | None = None
    """Seconds; overrides every tool's own approval timeout."""
    tool_approval_timeouts: Mapping[str, float] = field(default_factory=dict)
    """Seconds per tool; overrides everything else for that tool."""
    auto_approve_below: int | None = None
    """Lowers the worker's auto-approve threshold for this run (None: the worker's)."""
    task_queues: Mapping[str, str] = field(default_factory=dict)
    """Tools whose calls run on another task queue (a worker with no secrets)."""
    max_action_bytes: int = 64 * 1024
    workspace_root: str | None = None
    """The folder the workspace must be reached from without following a link."""


class GatedTools:
    """Every tool call of a run, through the gate: checked, approved where flagged, and
    carried out exactly as approved, once.

    The tools are descriptors (`ToolDescriptor`), recorded in the run's input or history;
    their code runs in the `check_tool` and `run_tool` activities on a worker that has
    them. A call's approval id is its idempotency key; no call can skip it.
    """

    def __init__(
        self, gate: ApprovalGate, tools: Sequence[ToolDescriptor], options: ToolCallOptions
    ) -> None:
        self.gate = gate
        self.tools = {descriptor.name: descriptor for descriptor in tools}
        self.options = options
        self._busy: set[str] = set()

    def schemas(self) -> list[dict[str, Any]]:
        return [descriptor.chat_schema() for descriptor in self.tools.values()]

    def waiting_on_reviewer(self, state: CallState) -> bool:
        """This open call only waits for a decision: nothing of it is in flight."""
        if state.result is not None or state.approval_id is None:
            return False
        if state.call.id in self._busy:
            return False
        return self.gate.record(state.approval_id).status is ApprovalStatus.PENDING

    async def call(self, state: CallState, context: ApprovalContext) -> ToolResult:
        """One tool call, start to finish (or, for a carried call, from its approval on)."""
        if state.approval_id is not None:
            record = self.gate.record(state.approval_id)
            descriptor = self.tools[record.action_json.tool]
            outcome = await self.gate.wait(record.id, self._validator(descriptor))
            return await self._conclude(state, descriptor, outcome)
        return await self._start(state, context)

    async def _start(self, state: CallState, context: ApprovalContext) -> ToolResult:
        call = state.call
        descriptor = self.tools.get(call.name)
        if descriptor is None:
            return tool_error(
                f"unknown tool {quoted(clip(call.name, 100))}; the tools of this run are: "
                f"{', '.join(self.tools) or 'none'}"
            )
        size = len(call.arguments.encode())
        if size > self.options.max_action_bytes:
            return tool_error(
                f"the arguments of {call.name} are {size:,} bytes; at most "
                f"{self.options.max_action_bytes:,} are accepted. Split the work into "
                "smaller calls."
            )
        try:
            raw = json.loads(call.arguments or "{}")
        except (json.JSONDecodeError, RecursionError) as error:
            return tool_error(f"the arguments of {call.name} are not valid JSON: {error}")
        if not isinstance(raw, dict):
            return tool_error(f"the arguments of {call.name} must be a JSON object")
        if lone_surrogate(raw) is not None:
            return tool_error(
                f"the arguments of {call.name} contain text that is not valid Unicode (a lone "
                "surrogate escape such as \\udc9b); write the text as plain characters"
            )
        if descriptor.approval == "never":
            # No rule to apply: the activity validates the arguments as it runs them.
            return await self._execute(descriptor, ToolAction(tool=call.name, args=raw))
        check = await self._check(state, descriptor, raw, modification=False)
        if not check.ok or check.args is None:
            return tool_error(check.error or f"{call.name} can't be carried out as asked")
        action = ToolAction(tool=descriptor.name, args=check.args)
        timeout = _seconds(check.execution_timeout_seconds)
        if not check.needs_approval:
            return await self._execute(descriptor, action, timeout=timeout)
        earlier = self.gate.rejected_earlier(action)
        if earlier is not None:
            return repeated_error(earlier.approval_id, earlier.reviewer, earlier.reason)
        from_worker = workflow.patched(PATCH_TRUST)
        preview = check.preview
        if from_worker:
            wait, notes = policy.stricter_timeout(
                descriptor.name,
                check.approval_timeout_seconds,
                self.options.approval_timeout,
                self.options.tool_approval_timeouts,
            )
            threshold, lowered = policy.stricter_threshold(
                check.auto_approve_below, self.options.auto_approve_below
            )
            notes += lowered
            if notes and preview is not None:
                preview = preview.model_copy(update={"warnings": [*preview.warnings, *notes]})
        else:
            wait = policy.approval_timeout(
                descriptor.name,
                _seconds(descriptor.approval_timeout_seconds),
                self.options.approval_timeout,
                self.options.tool_approval_timeouts,
            )
            threshold = self.options.auto_approve_below or 0
        record = self.gate.open(
            action,
            preview=preview,
            context=context,
            timeout=wait,
            risk=check.risk,
            validate=self._validator(descriptor),
            args_schema=descriptor.parameters,
            execution_timeout=timeout,
            quorum=check.quorum,
            scope_key=check.scope_key if from_worker else None,
            lapsed=check.lapsed_grantors,
        )
        state.approval_id = record.id
        if policy.auto_approved(record.risk, threshold):
            # `approve_by_policy` itself refuses to stand in for a quorum (where patched).
            self.gate.approve_by_policy(
                record.id,
                f"risk {record.risk} is below the auto-approve threshold {threshold}"
                + (" (the worker's policy)" if from_worker else " (the run's)"),
            )
        outcome = await self.gate.wait(record.id)
        return await self._conclude(state, descriptor, outcome)

    async def _conclude(
        self, state: CallState, descriptor: ToolDescriptor, outcome: ApprovalOutcome
    ) -> ToolResult:
        if outcome.repeated:
            return repeated_error(outcome.approval_id, outcome.reviewer, outcome.reason)
        if not outcome.approved:
            who = "nobody (timeout)" if outcome.timed_out else outcome.reviewer
            return tool_error(
                f"REJECTED by {who}: {outcome.reason}. The action was not performed. Do not "
                "retry the same action; find another way to do the task or stop and explain."
            )
        record = self.gate.record(outcome.approval_id)
        preview = record.modified_preview if record.modified_action_json else record.preview
        self._busy.add(state.call.id)
        try:
            result = await self._execute(
                descriptor,
                record.effective_action,
                approval_id=record.id,
                preview=None if preview is None or preview.failed else preview,
                timeout=_seconds(record.execution_timeout_seconds),
            )
        finally:
            self._busy.discard(state.call.id)
        record.executed_at = workflow.now()
        record.result = result.model_copy(update={"output": compact(result.output)})
        self.gate.touch()
        if record.status is ApprovalStatus.MODIFIED and result.ok:
            result = result.model_copy(
                update={
                    "summary": f"{result.summary} (arguments modified by {record.reviewer})",
                    "output": {
                        "reviewer_modified_arguments": record.effective_action.args,
                        "result": result.output,
                    },
                }
            )
        return result

    def _validator(self, descriptor: ToolDescriptor) -> Validator:
        async def check_modification(args: dict[str, Any]) -> Modification:
            check = await self._run_check(descriptor, args, modification=True)
            if not check.ok or check.args is None:
                raise ValueError(check.invalid or check.error or "refused by the tool")
            return Modification(check.args, check.preview, check.risk, check.quorum)

        return check_modification

    async def _check(
        self, state: CallState, descriptor: ToolDescriptor, args: Any, modification: bool
    ) -> ToolCheck:
        self._busy.add(state.call.id)
        try:
            grantors = self.gate.standing_grantors(descriptor.name)
            return await self._run_check(descriptor, args, modification, grantors)
        finally:
            self._busy.discard(state.call.id)

    async def _run_check(
        self,
        descriptor: ToolDescriptor,
        args: Any,
        modification: bool,
        grantors: Sequence[str] = (),
    ) -> ToolCheck:
        try:
            check: ToolCheck = await workflow.execute_activity(
                contract.ACTIVITY_CHECK_TOOL,
                ToolCheckRequest(
                    tool=descriptor.name,
                    digest=descriptor.digest,
                    args=args,
                    workspace=self.options.workspace,
                    modification=modification,
                    workspace_root=self.options.workspace_root,
                    standing_grantors=list(grantors),
                ),
                result_type=ToolCheck,
                start_to_close_timeout=CHECK_TIMEOUT,
                heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                retry_policy=TOOL_RETRY,
                summary=f"check {descriptor.name}",
            )
        except ActivityError as error:
            return ToolCheck(
                ok=False, error=clip(f"{descriptor.name} could not be checked: {error.cause}", 500)
            )
        return check

    async def _execute(
        self,
        descriptor: ToolDescriptor,
        action: ToolAction,
        approval_id: str | None = None,
        preview: ToolPreview | None = None,
        timeout: timedelta | None = None,
    ) -> ToolResult:
        request = ToolRequest(
            action=action,
            workspace=self.options.workspace,
            idempotency_key=approval_id,
            preview=preview,
            digest=descriptor.digest,
            workspace_root=self.options.workspace_root,
        )
        limit = timeout or timedelta(seconds=descriptor.execution_timeout_seconds)
        label = action.tool + (f" (approval {approval_id})" if approval_id else "")
        queue = self.options.task_queues.get(action.tool)
        try:
            result: ToolResult
            if descriptor.read_only and queue is None:
                # Read-only and quick: a local activity runs it inside the current
                # workflow task, without a round trip through the server.
                result = await workflow.execute_local_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    start_to_close_timeout=limit,
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
            else:
                result = await workflow.execute_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    task_queue=queue,
                    start_to_close_timeout=limit,
                    heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
        except ActivityError as error:
            return tool_error(f"{action.tool} failed: {error.cause}")
        return result


def tool_error(message: str) -> ToolResult:
    return ToolResult(ok=False, error=message, summary=clip(message, 200))


def repeated_error(approval_id: str, reviewer: str | None, reason: str | None) -> ToolResult:
    return tool_error(
        f"this exact action was already rejected in this run (approval {approval_id}, by "
        f"{reviewer}): {reason}. It was not asked again. Do not propose it again; find "
        "another way or stop and explain."
    )


def compact(value: Any, limit: int = 2_000) -> Any:
    """A value as it is when small; its JSON text cut to `limit` characters when not."""
    text = value if isinstance(value, str) else canonical_json(value)
    if len(text) <= limit:
        return value
    return clip(text, limit)


def _seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


# --- the gate ends with its workflow ----------------------------------------------------------


class GateInterceptor(Interceptor):
    """Ends a workflow's gate when the workflow ends (`HitlPlugin` installs it).

    A workflow that returns right after a decision would otherwise leave its search
    attributes saying it waits or runs, and its last "decided" notification scheduled in
    the task that completes it, which never runs. The gate publishes the final state
    and gives notifications in flight a few seconds, whatever the workflow remembered.
    Replay with the same plugin (`Replayer(..., plugins=[HitlPlugin()])`).
    """

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _GateEnds


class _GateEnds(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        try:
            result = await super().execute_workflow(input)
        except FailureError:
            # Only what fails the workflow: continue-as-new (the gate goes on in the next
            # run), cancellation, eviction and bugs (which fail the task, to be retried)
            # pass untouched.
            await _end_gate("failed")
            raise
        await _end_gate("completed")
        return result


async def _end_gate(state: str) -> None:
    gate = _GATES.get(workflow.info().run_id)
    if gate is None or gate._closed or not workflow.patched(PATCH_GATE_CLOSES):
        return
    if gate._run_state in (None, "running"):
        gate.set_run_state(state, state)
    await gate.close()
    await workflow.wait_condition(workflow.all_handlers_finished)
