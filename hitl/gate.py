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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from hitl import contract, policy
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
        CallState,
        DecisionEntry,
        DecisionKind,
        GateState,
        GateStatus,
        ModifyDecision,
        PendingApproval,
        RefusedDecision,
        RejectDecision,
        RejectedAction,
        ToolAction,
        ToolCheck,
        ToolCheckRequest,
        ToolDescriptor,
        ToolPreview,
        ToolRequest,
        ToolResult,
        canonical_json,
    )
    from hitl.text import clip, lone_surrogate, markdown_text, quoted

DECISION_SIGNALS = {
    contract.SIGNAL_APPROVE: DecisionKind.APPROVE,
    contract.SIGNAL_REJECT: DecisionKind.REJECT,
    contract.SIGNAL_MODIFY: DecisionKind.MODIFY,
}
MAX_REMEMBERED_REJECTIONS = 200
MAX_MEMO_ACTION_CHARS = 2_000
"""A pending approval's action rides in the memo only if it is this small."""
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)

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


@dataclass
class _Incoming:
    kind: DecisionKind
    decision: Any
    received_at: datetime
    refused: DecisionEntry | None = None
    """Already refused on arrival (unreadable): logged in its turn, so the log keeps order."""


def duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


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
    return record.model_copy(update=previews) if previews else record


class ApprovalGate:
    """Approval checkpoints for one workflow run.

    `state` restores a gate carried across continue-as-new: pending approvals keep
    their ids, deadlines and decision logs. `status` answers the `status` query when
    the workflow has no handler of its own. `memo` is added to what the gate
    publishes (e.g. the run's task).
    """

    def __init__(
        self,
        *,
        state: GateState | None = None,
        status: Callable[[], BaseModel] | None = None,
        memo: dict[str, Any] | None = None,
    ) -> None:
        state = state or GateState()
        self._records: dict[str, ApprovalRecord] = {record.id: record for record in state.pending}
        self._inbox: dict[str, list[_Incoming]] = {record.id: [] for record in state.pending}
        self._validators: dict[str, Validator | None] = {}
        self._rejected: dict[str, RejectedAction] = dict(state.rejected)
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
        # Approvals carried from an earlier run were announced by that run.
        self._announced: set[str] = set(self._records)
        self._previous_dynamic = workflow.get_dynamic_signal_handler()
        workflow.set_dynamic_signal_handler(self._on_signal)
        if workflow.get_query_handler(contract.QUERY_APPROVALS) is None:
            workflow.set_query_handler(contract.QUERY_APPROVALS, self.approvals)
        if workflow.get_query_handler(contract.QUERY_STATUS) is None:
            workflow.set_query_handler(contract.QUERY_STATUS, status or self.status)
        self._publisher = asyncio.create_task(self._publish_loop())

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
    ) -> ApprovalOutcome:
        """Ask for a decision on `action` and wait for it (or for the timeout).

        `validate` checks a reviewer's modified arguments; without it `modify` is
        refused. `approved_by_policy` (a reason) records the approval as decided by
        policy instead of asking. An action identical to one rejected earlier in this
        run (or the runs it continued from) is rejected at once, with that reason.
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
        record = self.open(
            action, preview=preview, context=context, timeout=timeout, risk=risk, validate=validate
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
        if record.status is ApprovalStatus.PENDING:
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
    ) -> ApprovalRecord:
        """Record a pending approval; `wait` announces it and waits for its decision."""
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
        )
        self._records[record.id] = record
        self._inbox[record.id] = []
        self._validators[record.id] = validate
        self._approvals_total += 1
        self._dirty = True
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
        if record.id in self._announced:
            return
        self._announced.add(record.id)
        task = asyncio.create_task(self._notify(record))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

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
        while inbox:
            item = inbox.pop(0)
            self._log(record, item.refused or self._entry(item, policy.refusal_for_decided(record)))

    def _expire(self, record: ApprovalRecord) -> None:
        timeout = record.expires_at - record.created_at
        self._settle_by_system(
            record,
            DecisionKind.TIMEOUT,
            ApprovalStatus.REJECTED,
            policy.TIMEOUT_REVIEWER,
            f"no decision came within {duration_text(timeout)}; auto-rejected at "
            f"{record.expires_at.isoformat()}",
        )
        workflow.logger.warning("Approval %s timed out: %s", record.id, record.reason)

    async def _judge(self, record: ApprovalRecord, item: _Incoming) -> None:
        if item.refused is not None:
            self._log(record, item.refused)
            return
        validate = self._validators.get(record.id)
        verdict = policy.judge(record, item.decision, item.received_at, validate is not None)
        refusal, modification = verdict.refusal, None
        if verdict.check_args is not None and validate is not None:
            self._judging += 1
            try:
                modification = await _modification(validate, verdict.check_args)
            except Exception as error:  # the tool's code refuses, in its own words
                refusal = policy.modification_refusal(record, error)
            finally:
                self._judging -= 1
        entry = self._entry(item, refusal)
        if refusal:
            self._log(record, entry)
            return
        decision = item.decision
        record.decisions.append(entry)
        record.reviewer = decision.reviewer
        record.reviewed_at = workflow.now()
        record.reason = entry.reason or None
        if isinstance(decision, RejectDecision):
            record.status = ApprovalStatus.REJECTED
            record.reason = decision.reason or "no reason given"
        elif modification is not None:
            record.status = ApprovalStatus.MODIFIED
            record.modified_action_json = ToolAction(
                tool=record.action_json.tool, args=modification.args
            )
            record.modified_preview = modification.preview
        else:
            record.status = ApprovalStatus.APPROVED
        self._dirty = True
        workflow.logger.info(
            "Approval %s %s by %s", record.id, record.status.value, decision.reviewer
        )

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
        """Take one decision as it arrived: queue it for judging, or refuse it now."""
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
        if refusal is not None:
            if record is None:
                self._refuse_unattached(name, (excerpt, size), refusal)
                return
            entry = DecisionEntry(
                decision_id=_text(fields.get("decision_id")),
                kind=kind,
                reviewer=_text(fields.get("reviewer")) or "unknown",
                received_at=workflow.now(),
                outcome="refused",
                refusal=refusal,
                excerpt=excerpt,
            )
            if record.status is ApprovalStatus.PENDING:
                self._inbox[record.id].append(_Incoming(kind, None, entry.received_at, entry))
            else:
                self._log(record, entry)
            return
        if record is None:
            self._refuse_unattached(
                name,
                (excerpt, size),
                f"unknown approval id {quoted(approval_id)}: this run's approvals are "
                f"{self._known_ids()}",
            )
            return
        item = _Incoming(kind, decision, workflow.now())
        if record.status is not ApprovalStatus.PENDING:
            self._log(record, self._entry(item, policy.refusal_for_decided(record)))
            return
        self._inbox[record.id].append(item)

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
            return policy.DECISION_MODELS[kind].model_validate(fields), None
        except ValidationError as error:
            return None, (
                f"malformed {kind.value} decision: {policy.format_validation_error(error)}"
            )

    def _entry(self, item: _Incoming, refusal: str | None) -> DecisionEntry:
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
        )

    def _log(self, record: ApprovalRecord, entry: DecisionEntry) -> None:
        """Keep a refused decision in the approval's log, bounded in count and size."""
        refused = sum(1 for item in record.decisions if item.outcome == "refused")
        if refused >= MAX_REFUSED_PER_APPROVAL:
            record.refused_dropped += 1
        else:
            if entry.args is not None and len(json.dumps(entry.args)) > EXCERPT_CHARS:
                entry.excerpt = clip(json.dumps(entry.args, ensure_ascii=False), EXCERPT_CHARS)
                entry.args = None
            entry.reason = clip(entry.reason, EXCERPT_CHARS)
            record.decisions.append(entry)
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
        return self._judging == 0 and not any(self._inbox.values())

    def snapshot(self) -> GateState:
        """What a continued run needs: pending approvals intact, remembered rejections."""
        return GateState(
            pending=[r for r in self._records.values() if r.status is ApprovalStatus.PENDING],
            rejected=self._rejected,
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

    async def _notify(self, record: ApprovalRecord) -> None:
        try:
            await workflow.execute_activity(
                contract.ACTIVITY_NOTIFY,
                compact_record(record),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=NOTIFY_RETRY,
                summary=f"notify reviewers: {record.id}",
            )
        except ActivityError as error:
            # A notification that can't be delivered must not cost the approval.
            workflow.logger.warning("Notification for %s failed: %s", record.id, error.cause)

    async def close(self) -> None:
        """Publish the final state; pending notifications are not waited for."""
        for task in list(self._notifications):
            task.cancel()
        self.publish()


async def _modification(validate: Validator, args: dict[str, Any]) -> Modification:
    if isinstance(validate, type) and issubclass(validate, BaseModel):
        return Modification(validate.model_validate(args).model_dump(mode="json"))
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
    auto_approve_below: int = 0
    """Calls whose risk is below this are approved by policy (0: none)."""
    task_queues: Mapping[str, str] = field(default_factory=dict)
    """Tools whose calls run on another task queue (a worker with no secrets)."""
    max_action_bytes: int = 64 * 1024


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
        record = self.gate.open(
            action,
            preview=check.preview,
            context=context,
            timeout=policy.approval_timeout(
                descriptor.name,
                _seconds(descriptor.approval_timeout_seconds),
                self.options.approval_timeout,
                self.options.tool_approval_timeouts,
            ),
            risk=check.risk,
            validate=self._validator(descriptor),
            args_schema=descriptor.parameters,
            execution_timeout=timeout,
        )
        state.approval_id = record.id
        if policy.auto_approved(record.risk, self.options.auto_approve_below):
            self.gate.approve_by_policy(
                record.id,
                f"risk {record.risk} is below the run's auto-approve threshold "
                f"{self.options.auto_approve_below}",
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
            return Modification(check.args, check.preview)

        return check_modification

    async def _check(
        self, state: CallState, descriptor: ToolDescriptor, args: Any, modification: bool
    ) -> ToolCheck:
        self._busy.add(state.call.id)
        try:
            return await self._run_check(descriptor, args, modification)
        finally:
            self._busy.discard(state.call.id)

    async def _run_check(
        self, descriptor: ToolDescriptor, args: Any, modification: bool
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
