"""The agent run: an LLM loop whose flagged tool calls pass the approval gate."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from hitl import contract, policy
    from hitl.gate import ApprovalGate, compact_record
    from hitl.models import (
        MAX_TASK_CHARS,
        SCRIPTED_BANNER,
        AgentCarry,
        ApprovalContext,
        ApprovalOutcome,
        ApprovalStatus,
        AssistantTurn,
        CallState,
        ChatMessage,
        LlmRequest,
        RunInput,
        RunResult,
        RunState,
        RunStatus,
        ToolAction,
        ToolPreview,
        ToolRequest,
        ToolResult,
        ToolRun,
        TurnState,
        canonical_json,
    )
    from hitl.text import clip
    from hitl.tools import REGISTRY, ToolSpec, tool_schemas
    from workflows.agent_v1 import AgentV1

PATCH_GATE_V2 = "hitl-gate-v2"
"""Runs that began before the gate (no marker) keep version 1's code (workflows/agent_v1.py)."""

SYSTEM_PROMPT = (
    "You are an operations agent working inside one workspace directory. Use the tools to do "
    "the user's task. Inspect before you act. Tools that change things (deleting or writing "
    "files, running commands, sending email) are reviewed by a human first: they may approve, "
    "modify or reject. If an action is rejected, do not propose the same action again: find "
    "another way or stop and explain. Ask for at most a few tool calls per turn; long tool "
    "outputs are cut short, so ask for small parts. Finish with a short answer saying what "
    "you did."
)

LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
LLM_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""The LLM and tool activities heartbeat every 2 s, so a dead worker is noticed in seconds."""
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
MAX_TOOL_RUNS_KEPT = 100
MAX_REASONING_CHARS = 8_000
MAX_EXCERPT_CHARS = 2_000
MAX_PREVIOUS_RUNS = 20
OMITTED_NOTE = (
    "[Note from the agent runtime: {count} earlier step(s) of this conversation were left out "
    "to keep it within its size limit. What they did stands; look again at anything you "
    "need.]"
)


def _error(message: str) -> ToolResult:
    return ToolResult(ok=False, error=message, summary=clip(message, 200))


def _size(message: ChatMessage) -> int:
    return len(message.content or "") + sum(
        len(call.name) + len(call.arguments) for call in message.tool_calls
    )


def _compact(value: Any, limit: int = MAX_EXCERPT_CHARS) -> Any:
    """A value as it is when small; its JSON text cut to `limit` characters when not."""
    text = value if isinstance(value, str) else canonical_json(value)
    if len(text) <= limit:
        return value
    return clip(text, limit)


def _validator(spec: ToolSpec) -> Any:
    def validate(args: dict[str, Any]) -> dict[str, Any]:
        return spec.args_model.model_validate(args).model_dump(mode="json")

    return validate


@workflow.defn(name=contract.WORKFLOW_NAME)
class AgentWorkflow:
    """One agent run.

    Its approval gate (`hitl.gate.ApprovalGate`) owns the signals `approve`, `reject`,
    `modify` and the query `approvals`; the run answers the query `status` (`RunStatus`).
    Long runs continue as new, carrying the conversation (trimmed), the turn in progress
    and every pending approval.
    """

    @workflow.init
    def __init__(self, run: RunInput) -> None:
        self._legacy: AgentV1 | None = None
        if not workflow.patched(PATCH_GATE_V2):
            self._legacy = AgentV1(run)
            return
        carry = run.carry
        self._run = run
        self._state = RunState.RUNNING
        self._answer: str | None = None
        self._step = carry.step if carry else 0
        self._messages: list[ChatMessage] = list(carry.messages) if carry else []
        self._omitted = carry.omitted_steps if carry else 0
        self._turn: TurnState | None = carry.turn if carry else None
        self._models_seen: list[str] = list(carry.models_seen) if carry else []
        self._started_at = carry.started_at if carry else workflow.now()
        self._previous_runs: list[str] = list(carry.previous_runs) if carry else []
        self._carried = len(carry.gate.pending) if carry else 0
        self._tool_runs: list[ToolRun] = []
        self._busy: set[str] = set()
        """Calls with an activity in flight, as opposed to waiting on a reviewer."""
        self._gate = ApprovalGate(
            state=carry.gate if carry else None,
            status=self.status,
            memo={contract.MEMO_TASK: clip(run.task, 500)},
        )

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        if self._legacy is not None:
            return await self._legacy.run(run)
        if len(run.task) > MAX_TASK_CHARS:
            raise ApplicationError(
                f"the task is {len(run.task):,} characters; at most {MAX_TASK_CHARS:,} are "
                "accepted. Put long material in a file in the workspace and refer to it.",
                type="TaskTooLong",
                non_retryable=True,
            )
        schemas = tool_schemas()
        while self._answer is None:
            if self._turn is None:
                if self._step >= run.max_steps:
                    self._state = RunState.STEP_LIMIT
                    self._answer = (
                        f"Stopped after {run.max_steps} steps without a final answer "
                        "(raise max_steps to allow more)."
                    )
                    break
                if self._should_continue_as_new():
                    await self._continue_as_new()
                self._step += 1
                self._gate.set_run_state(
                    RunState.RUNNING.value,
                    f"running: step {self._step} of at most {run.max_steps}",
                )
                turn = await self._next_turn(schemas)
                self._messages.append(
                    ChatMessage(
                        role="assistant",
                        content=clip(turn.content, MAX_REASONING_CHARS),
                        tool_calls=turn.tool_calls,
                    )
                )
                if not turn.tool_calls:
                    self._state = RunState.COMPLETED
                    self._answer = turn.content
                    break
                self._turn = TurnState(
                    step=self._step,
                    content=clip(turn.content, MAX_REASONING_CHARS),
                    calls=[CallState(call=call) for call in turn.tool_calls],
                )
            await self._play_turn(self._turn)
            for state in self._turn.calls:
                assert state.result is not None
                self._messages.append(
                    ChatMessage(
                        role="tool",
                        tool_call_id=state.call.id,
                        content=self._tool_message(state.result),
                    )
                )
            self._turn = None
            self._trim()
        self._gate.set_run_state(
            self._state.value, f"{self._state.value}: {clip(self._answer, 300)}"
        )
        await self._gate.close()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result(run)

    # --- the query -----------------------------------------------------------------------

    def status(self) -> RunStatus:
        return RunStatus(
            state=RunState(self._gate.run_state()),
            task=clip(self._run.task, 2_000),
            step=self._step,
            max_steps=self._run.max_steps,
            pending=self._gate.pending(),
            approvals_total=self._gate.approvals_total,
            refused_decisions=self._gate.refused,
            answer=self._answer,
            refused_dropped=self._gate.refused_dropped,
            previous_runs=self._previous_runs,
        )

    # --- one turn ------------------------------------------------------------------------

    async def _play_turn(self, turn: TurnState) -> None:
        limit = self._run.limits.max_tool_calls_per_turn
        tasks = []
        for index, state in enumerate(turn.calls):
            if state.result is not None:
                continue
            if index >= limit:
                state.result = _error(
                    f"too many tool calls in one turn: {len(turn.calls)} were asked for and at "
                    f"most {limit} run per turn, so this one was not run. Ask for at most "
                    f"{limit} at a time."
                )
                self._keep_run(turn.step, state, None)
                continue
            tasks.append(asyncio.create_task(self._call(turn.step, state, turn.content)))
        if not tasks:
            return
        await workflow.wait_condition(
            lambda: all(task.done() for task in tasks) or self._can_suspend(turn)
        )
        if all(task.done() for task in tasks):
            for task in tasks:
                task.result()
            return
        # Every call still open waits on a reviewer: the run continues as new here and
        # the next run waits on the same approvals.
        await self._continue_as_new()

    def _can_suspend(self, turn: TurnState) -> bool:
        if not self._should_continue_as_new() or not self._gate.idle():
            return False
        for state in turn.calls:
            if state.result is not None:
                continue
            if state.approval_id is None or state.call.id in self._busy:
                return False
            if self._gate.record(state.approval_id).status is not ApprovalStatus.PENDING:
                return False
        return True

    async def _call(self, step: int, state: CallState, reasoning: str) -> None:
        if state.approval_id is not None:
            # Carried from an earlier run, still waiting on its reviewer.
            spec = REGISTRY[self._gate.record(state.approval_id).action_json.tool]
            outcome = await self._gate.wait(state.approval_id, _validator(spec))
            result = await self._conclude(state, outcome)
        else:
            result = await self._start(step, state, reasoning)
        state.result = result
        self._keep_run(step, state, state.approval_id)

    async def _start(self, step: int, state: CallState, reasoning: str) -> ToolResult:
        call = state.call
        spec = REGISTRY.get(call.name)
        if spec is None:
            return _error(
                f"unknown tool {clip(call.name, 100)!r}; the tools are: {', '.join(REGISTRY)}"
            )
        size = len(call.arguments.encode())
        if size > self._run.limits.max_action_bytes:
            return _error(
                f"the arguments of {call.name} are {size:,} bytes; at most "
                f"{self._run.limits.max_action_bytes:,} are accepted. Split the work into "
                "smaller calls."
            )
        try:
            raw = json.loads(call.arguments or "{}")
        except (json.JSONDecodeError, RecursionError) as error:
            return _error(f"the arguments of {call.name} are not valid JSON: {error}")
        try:
            args = spec.args_model.model_validate(raw)
        except ValidationError as error:
            return _error(
                f"invalid arguments for {call.name}: {policy.format_validation_error(error)}"
            )
        action = ToolAction(tool=spec.name, args=args.model_dump(mode="json"))
        if not self._needs_approval(spec, args):
            return await self._execute(action, None, None)
        earlier = self._gate.rejected_earlier(action)
        if earlier is not None:
            return self._repeated(earlier)
        self._busy.add(call.id)
        try:
            preview = await self._preview(action)
        finally:
            self._busy.discard(call.id)
        risk, warning = self._risk(spec, args, preview)
        if warning:
            preview.warnings.append(warning)
        record = self._gate.open(
            action,
            preview=preview,
            context=ApprovalContext(
                original_request=clip(self._run.task, MAX_REASONING_CHARS),
                reasoning=reasoning,
                step=step,
            ),
            timeout=policy.approval_timeout(spec.name, spec.approval_timeout, self._run),
            risk=risk,
            validate=_validator(spec),
        )
        state.approval_id = record.id
        if policy.auto_approved(record.risk, self._run.auto_approve_below):
            self._gate.approve_by_policy(
                record.id,
                f"risk {record.risk} is below the run's auto-approve threshold "
                f"{self._run.auto_approve_below}",
            )
        return await self._conclude(state, await self._gate.wait(record.id))

    @staticmethod
    def _needs_approval(spec: ToolSpec, args: Any) -> bool:
        try:
            return spec.needs_approval(args)
        except Exception:  # a predicate that fails asks a reviewer
            return True

    @staticmethod
    def _risk(spec: ToolSpec, args: Any, preview: ToolPreview) -> tuple[int, str | None]:
        try:
            return spec.risk(args, preview), None
        except Exception as error:  # fail closed
            return 100, f"the risk could not be scored ({type(error).__name__}); shown as 100"

    @staticmethod
    def _repeated(earlier: Any) -> ToolResult:
        return _error(
            f"this exact action was already rejected in this run (approval "
            f"{earlier.approval_id}, by {earlier.reviewer}): {earlier.reason}. It was not asked "
            "again. Do not propose it again; find another way or stop and explain."
        )

    async def _conclude(self, state: CallState, outcome: ApprovalOutcome) -> ToolResult:
        if outcome.repeated:
            return self._repeated(outcome)
        record = self._gate.record(outcome.approval_id)
        if not outcome.approved:
            who = "nobody (timeout)" if outcome.timed_out else outcome.reviewer
            return _error(
                f"REJECTED by {who}: {outcome.reason}. The action was not performed. Do not "
                "retry the same action; find another way to do the task or stop and explain."
            )
        self._busy.add(state.call.id)
        try:
            preview: ToolPreview | None = record.preview
            if record.modified_action_json is not None:
                record.modified_preview = await self._preview(record.modified_action_json)
                preview = record.modified_preview
                self._gate.touch()
            result = await self._execute(
                record.effective_action,
                record.id,
                None if preview is None or preview.failed else preview,
            )
        finally:
            self._busy.discard(state.call.id)
        record.executed_at = workflow.now()
        record.result = result.model_copy(update={"output": _compact(result.output)})
        self._gate.touch()
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

    def _keep_run(self, step: int, state: CallState, approval_id: str | None) -> None:
        assert state.result is not None
        self._tool_runs.append(
            ToolRun(
                step=step,
                call_id=state.call.id,
                tool=clip(state.call.name, 100),
                args=_compact(state.call.arguments),
                approval_id=approval_id,
                result=state.result.model_copy(update={"output": _compact(state.result.output)}),
            )
        )
        del self._tool_runs[:-MAX_TOOL_RUNS_KEPT]

    # --- the conversation ---------------------------------------------------------------

    def _tool_message(self, result: ToolResult) -> str:
        text = json.dumps(result.model_dump(mode="json", exclude={"summary"}), ensure_ascii=False)
        limit = self._run.limits.tool_message_chars
        if len(text) <= limit:
            return text
        return clip(text, limit) + " [the output was cut short: ask for a smaller part]"

    def _conversation(self) -> list[ChatMessage]:
        head = [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=self._run.task),
        ]
        if self._omitted:
            head.append(ChatMessage(role="user", content=OMITTED_NOTE.format(count=self._omitted)))
        return head + self._messages

    def _trim(self) -> None:
        """Drop the oldest whole steps (a model turn and its tool results) over the budget."""
        budget = self._run.limits.conversation_chars - len(self._run.task) - len(SYSTEM_PROMPT)
        while sum(_size(message) for message in self._messages) > budget:
            rest = [i for i, m in enumerate(self._messages) if m.role == "assistant"][1:]
            if not rest:
                break
            del self._messages[: rest[0]]
            self._omitted += 1

    # --- continue-as-new -------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        limits = self._run.limits
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= limits.continue_as_new_events
            or info.get_current_history_size() >= limits.continue_as_new_bytes
            or len(self._gate.records) - self._carried >= limits.approvals_per_run
        )

    async def _continue_as_new(self) -> None:
        await workflow.wait_condition(workflow.all_handlers_finished)
        info = workflow.info()
        carry = AgentCarry(
            messages=self._messages,
            omitted_steps=self._omitted,
            step=self._step,
            turn=self._turn,
            gate=self._gate.snapshot(),
            models_seen=self._models_seen,
            started_at=self._started_at,
            previous_runs=[*self._previous_runs, info.run_id][-MAX_PREVIOUS_RUNS:],
        )
        workflow.logger.info(
            "Continuing as new at step %d with %d pending approval(s)",
            self._step,
            len(carry.gate.pending),
        )
        workflow.continue_as_new(self._run.model_copy(update={"carry": carry}))

    # --- activities ------------------------------------------------------------------------

    async def _next_turn(self, schemas: list[dict]) -> AssistantTurn:
        model = self._run.model
        try:
            turn: AssistantTurn = await workflow.execute_activity(
                contract.ACTIVITY_LLM,
                LlmRequest(
                    model=model, messages=self._conversation(), tools=schemas, step=self._step
                ),
                result_type=AssistantTurn,
                start_to_close_timeout=timedelta(minutes=3),
                heartbeat_timeout=LLM_HEARTBEAT_TIMEOUT,
                retry_policy=LLM_RETRY,
                summary=f"step {self._step}: ask {model.provider}:{model.name}",
            )
        except ActivityError as error:
            raise ApplicationError(
                f"the model could not be asked at step {self._step}: {error.cause}",
                type="ModelUnavailable",
                non_retryable=True,
            ) from error
        if turn.model and turn.model not in self._models_seen:
            self._models_seen = [*self._models_seen, clip(turn.model, 100)][-10:]
        if turn.scripted and not turn.content.startswith(SCRIPTED_BANNER):
            turn.content = f"{SCRIPTED_BANNER} {turn.content}".strip()
        return turn

    async def _preview(self, action: ToolAction) -> ToolPreview:
        try:
            preview: ToolPreview = await workflow.execute_activity(
                contract.ACTIVITY_PREVIEW,
                ToolRequest(action=action, workspace=self._run.workspace),
                result_type=ToolPreview,
                start_to_close_timeout=timedelta(minutes=1),
                heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                retry_policy=TOOL_RETRY,
                summary=f"preview {action.tool}",
            )
        except ActivityError as error:
            # The reviewer still decides, told the preview is missing; execution then has
            # nothing to check against, so tools that check refuse to act.
            return ToolPreview(
                summary=f"{action.tool}: no preview available",
                warnings=[clip(f"the preview failed: {error.cause}", 300)],
                failed=True,
            )
        return preview

    async def _execute(
        self, action: ToolAction, approval_id: str | None, preview: ToolPreview | None
    ) -> ToolResult:
        spec = REGISTRY[action.tool]
        args = spec.args_model.model_validate(action.args)
        label = f"{action.tool}" + (f" (approval {approval_id})" if approval_id else "")
        request = ToolRequest(
            action=action,
            workspace=self._run.workspace,
            idempotency_key=approval_id,
            preview=preview,
        )
        queue = self._run.tool_task_queues.get(action.tool)
        try:
            result: ToolResult
            if spec.read_only and queue is None:
                # A read-only tool is quick and changes nothing: a local activity runs it
                # inside the current workflow task, without a round trip through the server.
                result = await workflow.execute_local_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    start_to_close_timeout=spec.execution_timeout(args),
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
            else:
                result = await workflow.execute_activity(
                    contract.ACTIVITY_RUN_TOOL,
                    request,
                    result_type=ToolResult,
                    task_queue=queue,
                    start_to_close_timeout=spec.execution_timeout(args),
                    heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                    retry_policy=TOOL_RETRY,
                    summary=label,
                )
        except ActivityError as error:
            return _error(f"{action.tool} failed: {error.cause}")
        return result

    # --- the result --------------------------------------------------------------------------

    def _result(self, run: RunInput) -> RunResult:
        info = workflow.info()
        answer = self._answer or ""
        return RunResult(
            state=self._state,
            answer=clip(answer, 16_000),
            steps=self._step,
            approvals=[compact_record(record) for record in self._gate.records],
            tool_runs=self._tool_runs,
            refused_decisions=self._gate.refused,
            previous_runs=self._previous_runs,
            evidence={
                "workflow_id": info.workflow_id,
                "run_id": info.run_id,
                "previous_runs": self._previous_runs,
                "task_queue": info.task_queue,
                "task": clip(run.task, 2_000),
                "workspace": run.workspace,
                "model": {
                    "provider": run.model.provider,
                    "requested": run.model.name,
                    "base_url": run.model.base_url,
                    "answered_by": self._models_seen,
                },
                "started_at": self._started_at.isoformat(),
                "finished_at": workflow.now().isoformat(),
                "state": self._state.value,
                "steps": self._step,
                "answer": clip(answer, 4_000),
                "origin": _compact(run.origin, 4_000),
            },
        )
