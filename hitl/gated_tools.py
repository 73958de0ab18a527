"""Tool calls through the gate: checked, approved where flagged, carried out exactly as
approved, once.

`GatedTools` is what a workflow (the reference agent, a framework adapter) uses to run the
model's tool calls: the `check_tool` activity validates a call and applies the worker's
policy (needs approval, risk, timeouts, quorum), the gate (`hitl.gate.ApprovalGate`) asks
for a decision where one is needed, and the `run_tool` activity carries out the approved
action with the approval id as its idempotency key. Workflow code: deterministic, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from hitl import contract, policy
    from hitl.activities.tools import ToolActivities
    from hitl.gate import (
        CHECK_TIMEOUT,
        TOOL_HEARTBEAT_TIMEOUT,
        TOOL_RETRY,
        ApprovalGate,
        Validator,
    )
    from hitl.ledger import PATCH_TRUST, Modification
    from hitl.models import (
        ApprovalContext,
        ApprovalOutcome,
        ApprovalStatus,
        CallState,
        EscalationPolicy,
        ToolAction,
        ToolCall,
        ToolCheck,
        ToolCheckRequest,
        ToolDescriptor,
        ToolPreview,
        ToolRequest,
        ToolResult,
        canonical_json,
    )
    from hitl.text import clip, lone_surrogate, quoted


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
    escalation: EscalationPolicy | None = None
    """The escalation the run asks for: it may only make the worker's stricter."""


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

    @classmethod
    async def of_worker(
        cls,
        gate: ApprovalGate,
        names: Sequence[str] | None = None,
        options: ToolCallOptions | None = None,
    ) -> GatedTools:
        """The worker's `hitl` tools `names` (all of them when None, the built-in toolkits
        included when the worker has them: `HitlPlugin(tools=["builtin"])`), asked of the
        worker once with the `describe_tools` activity and recorded, so the run keeps them
        for its life. Raises `ActivityError` when the worker lacks one (it names them).

        For a framework adapter inside a workflow: declare `descriptors()` (or `schemas()`)
        as the framework's tools, and run a call with `call_by_name`.
        """
        descriptors: list[ToolDescriptor] = await workflow.execute_activity_method(
            ToolActivities.describe_tools,
            list(names) if names is not None else None,
            start_to_close_timeout=CHECK_TIMEOUT,
            retry_policy=TOOL_RETRY,
            summary="describe the tools",
        )
        return cls(gate, descriptors, options or ToolCallOptions())

    def schemas(self) -> list[dict[str, Any]]:
        """The tools as Chat Completions tool definitions (name, description, JSON Schema)."""
        return [descriptor.chat_schema() for descriptor in self.tools.values()]

    def descriptors(self) -> list[ToolDescriptor]:
        """The tools as the run knows them: name, description, `parameters` (JSON Schema),
        and flags, for an adapter to declare them as its framework's tools."""
        return list(self.tools.values())

    async def call_by_name(
        self,
        name: str,
        args: Mapping[str, Any] | str,
        context: ApprovalContext | str,
        *,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run one call of the `hitl` tool `name` as a framework's tool function would,
        from workflow code: the same path as the reference agent's calls.

        `args` are the model's arguments (a JSON object, or its text as the framework
        got it). The worker's `check_tool` validates them and applies its policy (needs
        approval, preview, risk, quorum, timeouts); a flagged call waits for a reviewer
        through the gate (listed by `hitl pending`, decided by `hitl approve/reject/
        modify`); the approved action (a reviewer's modified arguments included) runs
        in `run_tool` with the approval id as its idempotency key, so it happens at most
        once even when the activity is retried. `context` is what the reviewer reads as
        the request (a str is the original request). `call_id` names the call in
        errors (the framework's call id, if any).

        Never raises for the model's mistakes or a reviewer's no: the `ToolResult` says
        what happened (`ok`, `output`, `error`, `summary`), for the framework to hand
        back to the model: an unknown tool, invalid arguments, a rejection with its
        reason (`REJECTED by ...`), a timeout. Cancellation of the workflow propagates.
        """
        if isinstance(args, str):
            arguments = args
        else:
            try:
                arguments = json.dumps(dict(args), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as error:
                return tool_error(f"the arguments of {clip(name, 100)} are not JSON: {error}")
        call = ToolCall(
            id=call_id or f"call_{workflow.uuid4().hex[:16]}", name=name, arguments=arguments
        )
        if not isinstance(context, ApprovalContext):
            context = ApprovalContext(original_request=clip(str(context), 2_000))
        return await self.call(CallState(call=call), context)

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
        check = await self._check(state, descriptor, raw, modification=False, context=context)
        if not check.ok or check.args is None:
            return tool_error(check.error or f"{call.name} can't be carried out as asked")
        action = ToolAction(tool=descriptor.name, args=check.args)
        timeout = _seconds(check.execution_timeout_seconds)
        if not check.needs_approval:
            return await self._execute(descriptor, action, timeout=timeout)
        earlier = self.gate.rejected_earlier(action)
        if earlier is not None:
            return repeated_error(earlier.approval_id, earlier.reviewer, earlier.reason)
        from_worker = self.gate.patched(PATCH_TRUST)
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
            escalation, looser = policy.stricter_escalation(
                check.escalation, self.options.escalation
            )
            notes += looser
            rule, overruled = policy.acting_rule(check.rule, self.options.auto_approve_below)
            notes += overruled
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
            escalation = None
            rule = None
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
            escalation=escalation if from_worker else None,
            rule=rule,
            shadow=check.shadow if from_worker else None,
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
        self,
        state: CallState,
        descriptor: ToolDescriptor,
        args: Any,
        modification: bool,
        context: ApprovalContext | None = None,
    ) -> ToolCheck:
        self._busy.add(state.call.id)
        try:
            grantors = self.gate.standing_grantors(descriptor.name)
            return await self._run_check(descriptor, args, modification, grantors, context)
        finally:
            self._busy.discard(state.call.id)

    async def _run_check(
        self,
        descriptor: ToolDescriptor,
        args: Any,
        modification: bool,
        grantors: Sequence[str] = (),
        context: ApprovalContext | None = None,
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
                    # Who asked, for the worker's rules (a name counts only if verified).
                    requested_by=context.requested_by if context else "",
                    requester_verified=context.requester_verified if context else False,
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
        # Scheduled (not awaited) inside the approval's span: the run's headers carry it to
        # the tool's spans as their parent (nothing when telemetry is off).
        handle: workflow.ActivityHandle[ToolResult]
        with self.gate.telemetry.allowed_by(approval_id):
            if descriptor.read_only and queue is None:
                # Read-only and quick: a local activity runs it inside the current
                # workflow task, without a round trip through the server.
                handle = workflow.start_local_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    start_to_close_timeout=limit,
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
            else:
                handle = workflow.start_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    task_queue=queue,
                    start_to_close_timeout=limit,
                    heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
        try:
            result: ToolResult = await handle
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
