"""The approval gate: the workflow-side component every flagged action passes.

Create one in a workflow's `__init__` (decorated with `@workflow.init`) and ask it:

    outcome = await self.gate.request(action, preview=..., context=..., timeout=...)

It records the approval, publishes it (search attributes, memo, the Web UI's current
details), notifies reviewers, and waits for a decision with a durable timer that runs
from the moment the approval was created. It owns the decision handlers:

- update `decide`: one decision, answered with a `Receipt` (the log entry and the
  approval as the run now sees it); one that can't be read, or names nothing here, is
  refused before it reaches history (`ApplicationError` typed with its `RefusalCode`).
- signals `approve`, `reject`, `modify`, `revoke`: every input, of any arity, encoding,
  size or shape, ends as an applied or a refused decision with a bounded record. The
  handler never raises, so no signal can fail or wedge the run.
- queries `approvals` (every `ApprovalRecord` of this run) and, unless the workflow
  has its own, `status`.

The rules (first valid decision wins, late, stale, votes, standing approvals, ...) are
the pure ledger's (`hitl.ledger.Ledger`); this is its Temporal adapter: handlers, the
timer and reminders, the activities that verify decisions and notify reviewers, and
what the run publishes. Everything here is deterministic workflow code with no I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from hitl import contract, policy

    # Referenced, not named: mypy checks what `ask` sends and gets back. Imported once for
    # the worker (passed through), as the plugin that registers it imports it anyway.
    from hitl.activities.calls import CallActivities
    from hitl.activities.tools import bounded_preview
    from hitl.decisions import Receipt, RefusalCode
    from hitl.ledger import (
        PATCH_MODIFIED_RISK,
        PATCH_QUEUED_ANSWERED,
        PATCH_TRUST,
        Answer,
        CheckArgs,
        Checked,
        Incoming,
        Judging,
        Ledger,
        Modification,
        Need,
        Refusal,
        Verified,
        Verify,
    )
    from hitl.models import (
        ApprovalContext,
        ApprovalOutcome,
        ApprovalRecord,
        ApprovalStatus,
        DecisionCheck,
        DecisionKind,
        EscalationPolicy,
        GateState,
        GateStatus,
        NotifyEvent,
        PendingApproval,
        RefusedDecision,
        RejectedAction,
        RuleVerdict,
        ToolAction,
        ToolCheck,
        ToolCheckRequest,
        ToolPreview,
    )
    from hitl.telemetry import ApprovalTelemetry
    from hitl.text import clip, markdown_text, quoted, visible_json

__all__ = [
    "CHECK_TIMEOUT",
    "PATCH_ESCALATION",
    "PATCH_GATE_CLOSES",
    "PATCH_GATE_ENDS",
    "PATCH_MODIFIED_RISK",
    "PATCH_QUEUED_ANSWERED",
    "PATCH_RULES_AT_START",
    "PATCH_TRUST",
    "PATCH_UPDATED_AT",
    "TOOL_HEARTBEAT_TIMEOUT",
    "TOOL_RETRY",
    "ApprovalGate",
    "GateInterceptor",
    "Modification",
    "Validator",
    "WorkerVisibility",
    "compact_record",
    "schema_of",
]

DECISION_SIGNALS = {
    contract.SIGNAL_APPROVE: DecisionKind.APPROVE,
    contract.SIGNAL_REJECT: DecisionKind.REJECT,
    contract.SIGNAL_MODIFY: DecisionKind.MODIFY,
    contract.SIGNAL_REVOKE: DecisionKind.REVOKE,
}
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_GRACE = timedelta(seconds=5)
VERIFY_TIMEOUT = timedelta(seconds=10)
PATCH_GATE_CLOSES = "hitl-gate-closes-itself"
"""The gate ends with its workflow (HitlPlugin's interceptor): it publishes the final state
and lets the last notifications go out, also where the workflow forgot to. Runs made
before PATCH_GATE_ENDS asked it where they ended, and still do, so they replay as they ran."""
PATCH_GATE_ENDS = "hitl-gate-ends-with-its-run"
"""The same behaviour, decided where the gate is made (the run's first workflow task), not
where the run ends. Asked there, a replay can answer otherwise than the run did: when the
run ends on a local activity's result (verify_start refusing the run) and answering a query
completed the task early, the activity's marker is in that task and the ending in the next;
a replay hands the workflow the result before it tells it of the next task's markers, so
`patched()` says no where the run said yes, and the replay, every query of the run with it,
fails on the marker (TMPRL1100)."""
PATCH_RULES_AT_START = "hitl-gate-rules-decided-at-start"
"""The ledger's rules (PATCH_TRUST, PATCH_MODIFIED_RISK, PATCH_QUEUED_ANSWERED) all apply,
decided where the gate is made (the run's first workflow task). They were asked where they
first mattered, and that can be right after verify_decision's local activity: a decision
judged while a query was answered late has the activity's marker in one task and, in the
next, the approval settled with another decision queued behind it, where the ledger first
asks PATCH_QUEUED_ANSWERED; a replay hands over the activity's result before it tells the
workflow of that task's markers, says no where the run said yes, and every later query of
the run failed with TMPRL1100. Runs made before this id still ask each rule where they did."""
PATCH_ESCALATION = "hitl-gate-escalation"
"""Approvals follow the escalation policy the worker's check returns (reminders at its
times, escalation to another group, one bounded extension at the deadline). Asked where
the gate is made (the run's first workflow task); runs made before it ignore the policy,
so their timers replay as they ran."""
PATCH_UPDATED_AT = "hitl-gate-updated-at"
"""Every change the run publishes to its approvals (opened, voted, modified, settled,
escalated, ended) also sets HitlUpdatedAt to the workflow's time, so the review API's event
feed reads only the runs changed since it last looked. Asked where the gate is made (the
run's first workflow task), and only where the worker saw the attribute registered: a run
that upserts one the namespace lacks fails every workflow task. A replay answers from the
history's marker, whatever its worker saw."""
RULES_DECIDED_AT_START = frozenset({PATCH_TRUST, PATCH_MODIFIED_RISK, PATCH_QUEUED_ANSWERED})
MAX_MEMO_ACTION_CHARS = 2_000
"""A pending approval's action rides in the memo only if it is this small."""
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
"""The check and tool activities' retries (`hitl.gated_tools` and `ask`)."""
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""Tool activities heartbeat every 2 s, so a worker that dies is noticed in seconds."""
CHECK_TIMEOUT = timedelta(minutes=2)
MAX_TITLE_CHARS = 500
"""A run's title (`hitl runs`' TASK) is kept to this many characters."""

_GATES: weakref.WeakValueDictionary[str, ApprovalGate] = weakref.WeakValueDictionary()
"""The gate of each running workflow, by run id, for the interceptor that ends it."""


@dataclass
class WorkerVisibility:
    """What a worker learned of its namespace's search attributes when it started
    (`HitlPlugin`'s check), for the gates of the runs it starts."""

    updated_at: bool = False
    """HitlUpdatedAt is registered: new runs may stamp their changes with it."""


_WORKERS: weakref.WeakValueDictionary[str, _GateEnds] = weakref.WeakValueDictionary()
"""The interceptor of each running workflow, by run id: its worker's `WorkerVisibility`."""

Validator = Callable[[dict[str, Any]], Any] | type[BaseModel]
"""Checks a reviewer's modified arguments: a pydantic model, or a function, sync or
async, that returns them normalized (a dict), or a `Modification` with a preview of the
new action, and raises ValidationError or ValueError (the message tells the reviewer what
is wrong) to refuse them."""


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
    """Approval checkpoints for one workflow run; make it in the workflow's `__init__`.

    `state` restores a gate carried across continue-as-new: pending approvals keep
    their ids, deadlines and decision logs. `status` answers the `status` query when
    the workflow has no handler of its own. `memo` is added to what the gate
    publishes. `title` says what the run is about, shown by `hitl runs` (its TASK) and
    the reviewers' listings; `set_title` changes it. `reminders`: when to remind the
    reviewers of an approval still pending, as fractions of its time (default: halfway).
    """

    def __init__(
        self,
        *,
        state: GateState | None = None,
        status: Callable[[], BaseModel] | None = None,
        memo: dict[str, Any] | None = None,
        reminders: Sequence[float] = (0.5,),
        title: str | None = None,
    ) -> None:
        # Asked here, in the run's first workflow task, never first after a local activity.
        self._rules_at_start = workflow.patched(PATCH_RULES_AT_START)
        self._ledger = Ledger(state, patched=self.patched, logger=workflow.logger)
        self._ends_with_run = workflow.patched(PATCH_GATE_ENDS)
        self._escalates = workflow.patched(PATCH_ESCALATION)
        # Spans and replay-safe counts only: no command, so no patch (hitl/telemetry.py).
        self.telemetry = ApprovalTelemetry()
        self._stamps = _stamps_changes()
        self._validators: dict[str, Validator | None] = {}
        self._judging = 0
        self._run_state: str | None = None
        self._details: str | None = None
        self._memo = dict(memo or {})
        if title is not None:
            self._memo[contract.MEMO_TASK] = _title(title)
        self._published: Any = None
        self._notifications: set[asyncio.Task[None]] = set()
        self._reminders = sorted(fraction for fraction in reminders if 0 < fraction < 1)
        self._reminding: dict[str, asyncio.Task[None]] = {}
        # Approvals carried from an earlier run were announced by that run.
        self._announced: set[str] = set(self._ledger.records)
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

    def patched(self, patch_id: str) -> bool:
        """Whether one of the gate's recorded behaviour changes applies to this run: the
        ledger's rules as decided when the gate was made; a run made before that was
        decided asks `workflow.patched` where it always did, so it replays as it ran."""
        if self._rules_at_start and patch_id in RULES_DECIDED_AT_START:
            return True
        return workflow.patched(patch_id)

    @staticmethod
    def current() -> ApprovalGate:
        """The gate of the workflow running now, for code that lives outside the workflow
        class (a framework's tool hook, a capability built with the agent). Raises
        `LookupError` when the workflow made none (`ApprovalGate()` in its `__init__`)."""
        gate = _GATES.get(workflow.info().run_id)
        if gate is None or gate._closed:
            raise LookupError(
                f"workflow {workflow.info().workflow_type} has no approval gate: create one "
                "in its __init__ (self.gate = ApprovalGate()) before anything asks for approval"
            )
        return gate

    async def ask(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        context: ApprovalContext | str | None = None,
        preview: ToolPreview | None = None,
        risk: int | None = None,
        args_schema: dict[str, Any] | None = None,
        validate: Validator | None = None,
        modifiable: bool = True,
        timeout: timedelta | None = None,
        quorum: int = 1,
        escalation: EscalationPolicy | None = None,
    ) -> ApprovalOutcome:
        """Ask a reviewer about one call of a tool that is not a `hitl` tool (a framework's
        function tool), and wait for the decision or the timeout.

        The worker has its say first, in the `check_call` activity (`HitlPlugin`
        registers it): the preview and risk from the previewer it has for `tool`
        (`HitlPlugin(previewers=...)`), and its quorum, approval timeout and auto-approve
        threshold for that risk (the reviewers file). Without a worker previewer the
        reviewer sees `preview` if given, else the tool and its arguments. `risk`,
        `timeout`, `quorum` and `escalation` may only make the worker's policy stricter: a
        higher risk, a shorter timeout, a larger quorum, no extension at the deadline
        (the record's warnings say when one was not taken). When the check fails, the
        reviewer is still asked, with a failed preview, risk 100, the default timeout, and
        nothing approved by policy.

        `args_schema` (the tool's JSON Schema) lets reviewers' tools check a modification
        before sending it; `validate` checks it in the run (a pydantic model, or a
        function returning the arguments to use); with neither, a modification is checked
        against `args_schema`. `modifiable=False` refuses modifications (hosted tools).
        """
        action = ToolAction(tool=tool, args=args)
        if self._ledger.rejected_earlier(action) is not None:
            # Rejected before in this run: answered at once, nothing to check.
            return await self.request(action, risk=50)
        record = await self.open_call(
            tool,
            args,
            context=context,
            preview=preview,
            risk=risk,
            args_schema=args_schema,
            validate=validate,
            modifiable=modifiable,
            timeout=timeout,
            quorum=quorum,
            escalation=escalation,
        )
        return await self.wait(record.id)

    async def open_call(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        context: ApprovalContext | str | None = None,
        preview: ToolPreview | None = None,
        risk: int | None = None,
        args_schema: dict[str, Any] | None = None,
        validate: Validator | None = None,
        modifiable: bool = True,
        timeout: timedelta | None = None,
        quorum: int = 1,
        escalation: EscalationPolicy | None = None,
    ) -> ApprovalRecord:
        """`ask` without the wait: the worker's check, then the approval recorded (or
        decided by the worker's policy); `wait(record.id)` waits for it. For adapters that
        need the approval ids of a turn's calls before any is decided (to carry them when
        the run continues as new). The caller answers calls rejected earlier itself
        (`rejected_earlier`)."""
        action = ToolAction(tool=tool, args=args)
        if modifiable and validate is None and args_schema is not None:
            validate = schema_validator(args_schema)
        if args_schema is None and isinstance(validate, type) and issubclass(validate, BaseModel):
            args_schema = schema_of(validate)
        check = await self._check_call(action, risk, context)
        shown = check.preview if check.previewed or preview is None else bounded_preview(preview)
        assert shown is not None
        wait, notes = policy.stricter_timeout(
            tool,
            check.approval_timeout_seconds,
            timeout.total_seconds() if timeout is not None else None,
        )
        if risk is not None and risk < check.risk:
            notes.append(
                f"the workflow asked for risk {risk}; the worker's {check.risk} applies "
                "(a workflow may only raise it)"
            )
        escalating, looser = policy.stricter_escalation(check.escalation, escalation)
        notes.extend(looser)
        if shown is not check.preview and check.preview is not None:
            notes.extend(check.preview.warnings)  # the worker's: its reviewers file, ...
        if notes:
            shown = shown.model_copy(update={"warnings": [*shown.warnings, *notes]})
        needed = max(check.quorum, quorum)
        rule, _ = policy.acting_rule(check.rule)
        automatic = None
        if policy.auto_approved(check.risk, check.auto_approve_below) and needed <= 1:
            automatic = (
                f"risk {check.risk} is below the auto-approve threshold "
                f"{check.auto_approve_below} (the worker's policy)"
            )
        record = self.open(
            action,
            preview=shown,
            context=context,
            timeout=wait,
            risk=check.risk,
            validate=validate if modifiable else None,
            quorum=needed,
            args_schema=args_schema if modifiable else None,
            escalation=escalating,
            rule=rule,
            shadow=check.shadow,
        )
        if automatic is not None:
            self.approve_by_policy(record.id, automatic)
        return record

    async def _check_call(
        self, action: ToolAction, risk: int | None, context: ApprovalContext | str | None
    ) -> ToolCheck:
        """The worker's preview, risk and policy for a call (`check_call`); fails closed."""
        asker = context if isinstance(context, ApprovalContext) else None
        try:
            return await workflow.execute_activity_method(
                CallActivities.check_call,
                ToolCheckRequest(
                    tool=action.tool,
                    args=action.args,
                    min_risk=risk,
                    requested_by=asker.requested_by if asker else "",
                    requester_verified=asker.requester_verified if asker else False,
                ),
                start_to_close_timeout=CHECK_TIMEOUT,
                heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                retry_policy=TOOL_RETRY,
                summary=f"check {clip(action.tool, 100)}",
            )
        except ActivityError as error:
            name = quoted(clip(action.tool, 100))
            return ToolCheck(
                ok=True,
                risk=100,
                preview=ToolPreview(
                    summary=f"{name}: the worker could not check this call",
                    details=clip(_arguments_text(action.args), 16 * 1024),
                    warnings=[
                        clip(
                            f"the worker's check of {name} failed ({error.cause}); the "
                            "arguments are shown as sent, the risk is 100 and the default "
                            "approval timeout applies",
                            500,
                        )
                    ],
                    failed=True,
                ),
                previewed=True,
            )

    @property
    def ledger(self) -> Ledger:
        """The run's approvals and the rules that judge decisions on them."""
        return self._ledger

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
        earlier = self._ledger.rejected_earlier(action)
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
            and self.patched(PATCH_TRUST)
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
        return self._ledger.rejected_earlier(action)

    def approve_by_policy(self, approval_id: str, reason: str) -> None:
        """Decide a pending approval by the run's own policy instead of asking a reviewer."""
        self._ledger.approve_by_policy(approval_id, reason, workflow.now())

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
        escalation: EscalationPolicy | None = None,
        rule: RuleVerdict | None = None,
        shadow: RuleVerdict | None = None,
    ) -> ApprovalRecord:
        """Record a pending approval; `wait` announces it and waits for its decision.

        A standing approval that covers the action decides it at once. `scope_key`
        narrows what a standing approval granted on this one covers (the tool's
        `standing_scope`: for commands, the program and its options). `escalation`: the
        worker's escalation policy for it (`ToolCheck.escalation`, made stricter by the
        run at most); ignored in runs made before PATCH_ESCALATION. `rule`: the worker's
        auto-approval rules' verdict (`ToolCheck.rule`, through `policy.acting_rule`): a
        deny rejects at once, an approve approves (never a quorum); `shadow`: a verdict
        only recorded beside the person's decision (`ToolCheck.shadow`).
        """
        now = workflow.now()
        info = workflow.info()
        record = self._ledger.open(
            action,
            approval_id=f"apr_{workflow.uuid4().hex[:16]}",
            now=now,
            session_id=info.workflow_id,
            run_id=info.run_id,
            preview=preview,
            context=context,
            timeout=timeout,
            risk=risk,
            modifiable=validate is not None,
            args_schema=args_schema,
            execution_timeout=execution_timeout,
            quorum=quorum,
            scope_key=scope_key,
            lapsed=lapsed,
            escalation=escalation if self._escalates else None,
            rule=rule,
            shadow=shadow,
        )
        self._validators[record.id] = validate
        self.telemetry.requested(record)
        return record

    async def wait(self, approval_id: str, validate: Validator | None = None) -> ApprovalOutcome:
        """Wait for the decision on a pending approval (also one carried from an earlier run)."""
        record = self._ledger.records[approval_id]
        if validate is not None:
            self._validators[approval_id] = validate
            self._ledger.modifiable[approval_id] = True
        if record.status is ApprovalStatus.PENDING:
            self._announce(record)
            await self._await_decision(record)
        self.telemetry.settled(record)
        if record.status is ApprovalStatus.REJECTED:
            self._ledger.remember_rejection(record)
        return self.outcome(approval_id)

    def outcome(self, approval_id: str) -> ApprovalOutcome:
        return self._ledger.outcome(approval_id)

    def record(self, approval_id: str) -> ApprovalRecord:
        return self._ledger.records[approval_id]

    def touch(self) -> None:
        """Say that a record changed (a result, a modified preview): publish it."""
        self._ledger.dirty = True

    def standing_grantors(self, tool: str) -> list[str]:
        """Who granted the standing approvals of `tool` still in force in this run."""
        return self._ledger.standing_grantors(tool)

    # --- waiting ------------------------------------------------------------------------

    def _announce(self, record: ApprovalRecord) -> None:
        if record.id not in self._announced:
            self._event(record, "pending")
        if record.id not in self._reminding and record.escalation is not None:
            self._reminding[record.id] = asyncio.create_task(self._escalate(record))
        elif record.id not in self._reminding and self._reminders:
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

    async def _escalate(self, record: ApprovalRecord) -> None:
        """The record's escalation policy, stage by stage on durable timers: reminders at
        its times (the gate's own when it sets none), then `to` are asked and may decide.
        A stage carried from an earlier run (continue-as-new) is not done twice."""
        rule = record.escalation
        assert rule is not None
        span = record.expires_at - record.created_at
        stages: list[tuple[Any, str]] = [
            (record.created_at + span * fraction, "reminder")
            for fraction in (rule.remind_at or self._reminders)
        ]
        escalated = any(step.kind == "escalated" for step in record.escalations)
        if rule.escalate_after_seconds is not None and rule.to and not escalated:
            stages.append(
                (record.created_at + timedelta(seconds=rule.escalate_after_seconds), "escalated")
            )
        stages.sort(key=lambda stage: (stage[0], stage[1]))
        for moment, stage in stages:
            if moment >= record.expires_at:
                continue
            wait = moment - workflow.now()
            if wait <= timedelta(0) and stage == "reminder":
                continue
            if wait > timedelta(0):
                await workflow.sleep(wait, summary=f"approval {record.id} {stage}")
            if record.status is not ApprovalStatus.PENDING:
                return
            if stage == "escalated":
                if self._ledger.escalate(record.id, list(rule.to), workflow.now()) is None:
                    return
            self._event(record, stage)

    async def _await_decision(self, record: ApprovalRecord) -> None:
        # The deadline the reviewer is shown is the deadline: the timer runs from the
        # record's creation, not from when the notification went out.
        remaining = record.expires_at - workflow.now()
        timer: asyncio.Task[None] | None = None
        if remaining > timedelta(0):
            timer = asyncio.create_task(
                workflow.sleep(remaining, summary=f"approval {record.id} deadline")
            )
        inbox = self._ledger.inbox[record.id]
        try:
            while record.status is ApprovalStatus.PENDING:
                item = self._ledger.next_decision(record.id)
                if item is not None:
                    votes = len(record.votes)
                    await self._run(self._ledger.judge(item, workflow.now()))
                    if (
                        self._escalates  # runs since then announce votes (asked at start)
                        and record.status is ApprovalStatus.PENDING
                        and len(record.votes) > votes
                        and record.id in self._announced
                    ):
                        # A vote toward a quorum, from any path: the channels (a Slack
                        # message updated in place) say so, not only the decision's sender.
                        self._event(record, "voted")
                    continue
                if timer is None or timer.done():
                    if self._extend(record):
                        timer = asyncio.create_task(
                            workflow.sleep(
                                record.expires_at - workflow.now(),
                                summary=f"approval {record.id} extended deadline",
                            )
                        )
                        continue
                    self._ledger.expire(record.id, workflow.now())
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
        self._ledger.settled(record.id, workflow.now())

    def _extend(self, record: ApprovalRecord) -> bool:
        """At the deadline, `at_deadline = "extend"` holds the approval once, bounded."""
        rule = record.escalation
        if rule is None or rule.at_deadline != "extend":
            return False
        if not self._ledger.extend(
            record.id, timedelta(seconds=rule.extend_by_seconds), workflow.now()
        ):
            return False
        self._event(record, "extended")
        return True

    # --- judging: the ledger asks, the adapter runs the checks ---------------------------

    async def _run(self, judging: Judging) -> None:
        """Drive one judgement: each check the ledger asks for runs here (an activity, a
        tool's validator) and its answer goes back in, until the decision is logged."""
        self._judging += 1
        try:
            need = next(judging)
            while True:
                answer = await self._meet(need)
                need = judging.send(answer)
        except StopIteration:
            pass
        finally:
            self._judging -= 1

    async def _meet(self, need: Need) -> Answer:
        if isinstance(need, Verify):
            refusal = await self._verify(need)
            return Verified(workflow.now(), refusal)
        assert isinstance(need, CheckArgs)
        validate = self._validators.get(need.approval_id) if need.approval_id else None
        if validate is None:
            return Checked(workflow.now(), error=ValueError("no validator"))
        try:
            modification = await _modification(validate, need.args, self.patched)
        except Exception as error:  # the tool's code refuses, in its own words
            return Checked(workflow.now(), error=error)
        return Checked(workflow.now(), modification=modification)

    async def _verify(self, need: Verify) -> Refusal | None:
        """Why the worker refuses this decision (signature, reviewer rules), or None.

        Checked in a local activity: the keys and the reviewers file stay on the worker,
        and the answer is recorded, so a replay decides the same.
        """
        try:
            result: DecisionCheck = await workflow.execute_local_activity(
                contract.ACTIVITY_VERIFY_DECISION,
                need.request,
                result_type=DecisionCheck,
                start_to_close_timeout=VERIFY_TIMEOUT,
                retry_policy=NOTIFY_RETRY,
                summary="verify decision",
            )
        except ActivityError as error:
            return Refusal(
                RefusalCode.UNVERIFIABLE,
                clip(f"the decision could not be verified: {error.cause}", 300),
            )
        if result.refusal is None:
            return None
        return Refusal(_code(result.code, RefusalCode.NOT_ALLOWED), result.refusal)

    async def _revoke_loop(self) -> None:
        # Revocations are judged one after another, like decisions on an approval.
        while True:
            await workflow.wait_condition(lambda: bool(self._ledger.revocations))
            item = self._ledger.next_revocation()
            if item is not None:
                await self._run(self._ledger.revoke(item, workflow.now()))

    # --- receiving decisions --------------------------------------------------------------

    def _on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        kind = DECISION_SIGNALS.get(name)
        if kind is None:
            if self._previous_dynamic is not None:
                self._previous_dynamic(name, args)
                return
            self._refuse_unattached(
                name,
                f"{quoted(name)} is not a signal this run handles; decisions are sent as "
                "approve, reject or modify",
            )
            return
        try:
            self.receive(kind, args, name)
        except Exception as error:  # no input may fail the run
            self._refuse_unattached(
                name, f"the {name} signal could not be read: {type(error).__name__}"
            )

    def receive(self, kind: DecisionKind, args: Sequence[RawValue], name: str) -> None:
        """Take one signalled decision as it arrived: queue it for judging, or refuse it now."""
        if len(args) != 1:
            self._refuse_unattached(
                name,
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
                f"the {name} payload could not be decoded (encoding {quoted(encoding)}): "
                f"{clip(str(error), 200)}",
            )
            return
        item = self._ledger.receive(kind, value, name, workflow.now())
        self.telemetry.received(item.approval_id if item is not None else None)

    def _refuse_unattached(self, name: str, sentence: str) -> None:
        self._ledger.refuse_unattached(
            name, Refusal(RefusalCode.MALFORMED, sentence), workflow.now()
        )

    # --- the decide update ----------------------------------------------------------------

    def _validate_update(self, payload: Any) -> None:
        """Refuse, before it reaches history, a decision that can't be read or names nothing.

        What can be judged (late, already decided, wrong digest, not allowed) is accepted
        and refused into the decision log, so the audit shows the attempt. The refusal's
        code is the error's type, for the reviewer's side to answer from.
        """
        refusal = self._ledger.readable(payload)
        if refusal is not None:
            raise ApplicationError(refusal.sentence, type=refusal.code.value, non_retryable=True)

    async def _on_update(self, payload: Any) -> Receipt:
        kind = DecisionKind(payload["kind"])
        item = self._ledger.receive(kind, payload, contract.UPDATE_DECIDE, workflow.now())
        if item is None:  # the validator let through only what names something here
            raise ApplicationError(
                "the decision names nothing in this run",
                type=RefusalCode.UNKNOWN_APPROVAL.value,
                non_retryable=True,
            )
        self.telemetry.received(item.approval_id)
        await workflow.wait_condition(lambda: item.entry is not None)
        assert item.entry is not None
        return self._receipt(item)

    def _receipt(self, item: Incoming) -> Receipt:
        assert item.entry is not None
        record = None
        if item.kind is not DecisionKind.REVOKE and item.approval_id is not None:
            found = self._ledger.records.get(item.approval_id)
            record = compact_record(found) if found is not None else None
        return Receipt(entry=item.entry, record=record)

    # --- queries and state ------------------------------------------------------------------

    def approvals(self, selector: Any = None) -> list[ApprovalRecord]:
        """Every approval record of this run; `{"ids": [...]}` or `{"status": S}` narrows it."""
        records = list(self._ledger.records.values())
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
            for record in self._ledger.records.values()
            if record.status is ApprovalStatus.PENDING
        ]

    def status(self) -> GateStatus:
        return GateStatus(
            state=self.run_state(),
            pending=self.pending(),
            approvals_total=self._ledger.approvals_total,
            refused_decisions=self._ledger.refused,
            refused_dropped=self._ledger.refused_dropped,
        )

    @property
    def records(self) -> list[ApprovalRecord]:
        return list(self._ledger.records.values())

    @property
    def refused(self) -> list[RefusedDecision]:
        return self._ledger.refused

    @property
    def refused_dropped(self) -> int:
        return self._ledger.refused_dropped

    @property
    def approvals_total(self) -> int:
        return self._ledger.approvals_total

    def idle(self) -> bool:
        """No decision is waiting to be judged or being judged: safe to continue as new."""
        return self._judging == 0 and not self._ledger.waiting()

    async def settle(self) -> None:
        """Wait until no revocation waits or is being judged, so a snapshot carries it.

        Decisions on pending approvals are judged by whoever waits on the approval; a
        revocation has no waiter, so without this one sent just before a run continues
        as new would be lost with the old run.
        """
        if self.patched(PATCH_TRUST):
            await workflow.wait_condition(
                lambda: not self._ledger.revocations and self._judging == 0
            )

    def snapshot(self) -> GateState:
        """What a continued run needs: pending approvals intact, remembered rejections."""
        return self._ledger.snapshot()

    # --- visibility -----------------------------------------------------------------------

    def set_run_state(self, state: str | None, details: str | None = None) -> None:
        """The workflow's own state and current details, shown when nothing is pending."""
        self._run_state, self._details = state, details
        self._ledger.dirty = True

    def set_title(self, text: str) -> None:
        """Say what the run is about: `hitl runs` shows it as the run's TASK (the memo's
        `hitl_task`), cut to MAX_TITLE_CHARS. Published with the run's next change."""
        self._memo[contract.MEMO_TASK] = _title(text)
        self._ledger.dirty = True

    @property
    def title(self) -> str | None:
        value = self._memo.get(contract.MEMO_TASK)
        return value if isinstance(value, str) else None

    def run_state(self) -> str:
        """The workflow's final state once it has one, else whether it waits on a reviewer."""
        if self._run_state not in (None, "running"):
            return str(self._run_state)
        waiting = any(r.status is ApprovalStatus.PENDING for r in self._ledger.records.values())
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
            await workflow.wait_condition(lambda: self._ledger.dirty)
            self.publish()

    def publish(self) -> None:
        """Mirror the approval state to search attributes, memo and current details now."""
        self._ledger.dirty = False
        pending = self.pending()
        state = self.run_state()
        ids = list(self._ledger.records)
        memo = {
            # Without an escalation the memo stays as runs before it wrote it.
            contract.MEMO_PENDING: [
                item.model_dump(
                    mode="json", exclude=None if item.escalated_to else {"escalated_to"}
                )
                for item in pending
            ],
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
        # A new memo alone (a vote, an escalation) is stamped too: the feed reads the memo.
        stamped = self._stamps and (previous is None or previous[:4] != published[:4])
        if previous is None or previous[:3] != published[:3] or stamped:
            updates: list[SearchAttributeUpdate[Any]] = [
                contract.STATE_KEY.value_set(state),
                contract.PENDING_KEY.value_set(len(pending)),
                contract.APPROVAL_IDS_KEY.value_set(ids),
            ]
            if stamped:
                updates.append(contract.UPDATED_AT_KEY.value_set(workflow.now()))
            workflow.upsert_search_attributes(updates)
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


def _title(text: str) -> str:
    return clip(" ".join(str(text).split()), MAX_TITLE_CHARS)


def _arguments_text(args: dict[str, Any]) -> str:
    try:
        return visible_json(args, indent=2)
    except (TypeError, ValueError):
        return repr(args)


def schema_validator(schema: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Checks a modification against a JSON Schema, in the run (jsonschema is pure)."""

    def check(args: dict[str, Any]) -> dict[str, Any]:
        with workflow.unsafe.imports_passed_through():
            # Loaded only by runs that use it; pure, deterministic: the reviewers' tools
            # check a modification with the same function before sending it.
            from hitl.arguments import problems_with

        problem = problems_with(schema, args)
        if problem is not None:
            raise ValueError(problem)
        return args

    return check


async def _modification(
    validate: Validator, args: dict[str, Any], patched: Callable[[str], bool]
) -> Modification:
    if isinstance(validate, type) and issubclass(validate, BaseModel):
        checked = validate.model_validate(args)
        # What the reviewer wrote, checked and normalized, without defaults they never
        # saw: the action is what they decided.
        keep_written = patched(PATCH_TRUST)
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


def _arrived_or_done(inbox: list[Incoming], timer: asyncio.Task[None]) -> Callable[[], bool]:
    return lambda: bool(inbox) or timer.done()


def _code(value: str | None, default: RefusalCode) -> RefusalCode:
    try:
        return RefusalCode(value) if value else default
    except ValueError:
        return default


# --- the gate ends with its workflow ----------------------------------------------------------


class GateInterceptor(Interceptor):
    """Ends a workflow's gate when the workflow ends (`HitlPlugin` installs it).

    A workflow that returns right after a decision would otherwise leave its search
    attributes saying it waits or runs, and its last "decided" notification scheduled in
    the task that completes it, which never runs. The gate publishes the final state
    and gives notifications in flight a few seconds, whatever the workflow remembered.
    Replay with the same plugin (`Replayer(..., plugins=[HitlPlugin()])`).
    """

    def __init__(self, visibility: WorkerVisibility | None = None) -> None:
        # One class per worker, made once: it carries what this worker knows to its runs.
        self._inbound = type(
            "_GateEnds", (_GateEnds,), {"visibility": visibility or WorkerVisibility()}
        )

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return self._inbound


class _GateEnds(WorkflowInboundInterceptor):
    visibility = WorkerVisibility()

    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(outbound)
        _WORKERS[outbound.info().run_id] = self

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


def _stamps_changes() -> bool:
    """Whether this run stamps its changes with HitlUpdatedAt (PATCH_UPDATED_AT), asked in
    its first workflow task. A new run does where its worker saw the attribute registered;
    a replayed one did if its history has the marker, whatever this worker saw."""
    worker = _WORKERS.get(workflow.info().run_id)
    if workflow.unsafe.is_replaying() or (worker is not None and worker.visibility.updated_at):
        return workflow.patched(PATCH_UPDATED_AT)
    return False


async def _end_gate(state: str) -> None:
    gate = _GATES.get(workflow.info().run_id)
    if gate is None or gate._closed:
        return
    # Decided when the gate was made; a run made before that was decided asks here, as it did.
    if not (gate._ends_with_run or workflow.patched(PATCH_GATE_CLOSES)):
        return
    if gate._run_state in (None, "running"):
        gate.set_run_state(state, state)
    await gate.close()
    await workflow.wait_condition(workflow.all_handlers_finished)
