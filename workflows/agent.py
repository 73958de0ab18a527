"""The agent run: an LLM loop whose flagged tool calls pass the approval gate."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from hitl import contract
    from hitl.gate import ApprovalGate, compact_record
    from hitl.gated_tools import GatedTools, ToolCallOptions, compact
    from hitl.ledger import PATCH_TRUST
    from hitl.models import (
        MAX_TASK_CHARS,
        SCRIPTED_BANNER,
        AgentCarry,
        ApprovalContext,
        AssistantTurn,
        CallState,
        ChatMessage,
        LlmRequest,
        RunInput,
        RunResult,
        RunState,
        RunStatus,
        StartCheck,
        StartCheckRequest,
        ToolDescriptor,
        ToolResult,
        ToolRun,
        TurnState,
    )
    from hitl.text import clip
    from workflows.agent_v1 import AgentV1

PATCH_GATE_V2 = "hitl-gate-v2"
"""Runs that began before the gate (no marker) keep version 1's code (workflows/agent_v1.py)."""
PATCH_CONTINUATION = "hitl-continuation-verified"
"""From here on a run that continues as new asks the server what its previous run was
before it believes the carry (a local activity; the v4 histories recorded under
`hitl-trust-boundaries` have none)."""

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
CONTINUATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
LLM_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""The LLM activity heartbeats every 2 s, so a dead worker is noticed in seconds."""
DESCRIBE_TIMEOUT = timedelta(seconds=30)
VERIFY_START_TIMEOUT = timedelta(seconds=10)
MAX_TOOL_RUNS_KEPT = 100
MAX_REASONING_CHARS = 8_000
MAX_PREVIOUS_RUNS = 20
OMITTED_NOTE = (
    "[Note from the agent runtime: {count} earlier step(s) of this conversation were left out "
    "to keep it within its size limit. What they did stands; look again at anything you "
    "need.]"
)


def _continued(info: workflow.Info) -> bool:
    """This run was started by its own continue-as-new, not by a client, a retry or cron."""
    return info.continued_run_id is not None and info.attempt == 1 and not info.cron_schedule


def _error(message: str) -> ToolResult:
    return ToolResult(ok=False, error=message, summary=clip(message, 200))


def _size(message: ChatMessage) -> int:
    return len(message.content or "") + sum(
        len(call.name) + len(call.arguments) for call in message.tool_calls
    )


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
        self._forged_carry = False
        if carry is not None and workflow.patched(PATCH_TRUST) and not _continued(workflow.info()):
            # Only this workflow's own continue-as-new writes a carry: one in a client's
            # start (approved records, standing approvals, a turn in progress) is refused.
            self._forged_carry, carry = True, None
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
        self._requester: StartCheck | None = carry.requester if carry else None
        self._tool_runs: list[ToolRun] = []
        self._tools: GatedTools | None = None
        self._gate = ApprovalGate(
            state=carry.gate if carry else None,
            status=self.status,
            memo={contract.MEMO_TASK: clip(run.task, 500)},
        )

    @workflow.run
    async def run(self, run: RunInput) -> RunResult:
        if self._legacy is not None:
            return await self._legacy.run(run)
        if self._forged_carry:
            raise ApplicationError(
                "this run's input carries the state of an earlier run (carry), which only the "
                "run itself writes when it continues as new; start runs without it",
                type="ForgedCarry",
                non_retryable=True,
            )
        if len(run.task) > MAX_TASK_CHARS:
            raise ApplicationError(
                f"the task is {len(run.task):,} characters; at most {MAX_TASK_CHARS:,} are "
                "accepted. Put long material in a file in the workspace and refer to it.",
                type="TaskTooLong",
                non_retryable=True,
            )
        if run.carry is not None and workflow.patched(PATCH_CONTINUATION):
            await self._verify_continuation()
        if run.carry is None and workflow.patched(PATCH_TRUST):
            self._requester = await self._verify_start(run)
            tools = await self._worker_tools(run)
        else:
            tools = (
                run.tools if run.tools is not None else await self._describe_tools(run.tool_names)
            )
        self._tools = GatedTools(
            self._gate,
            tools,
            ToolCallOptions(
                workspace=run.workspace,
                approval_timeout=run.approval_timeout_seconds,
                tool_approval_timeouts=run.tool_approval_timeouts,
                auto_approve_below=run.auto_approve_below,
                task_queues=run.tool_task_queues,
                max_action_bytes=run.limits.max_action_bytes,
                workspace_root=run.workspace_root,
                escalation=run.escalation,
            ),
        )
        schemas = self._tools.schemas()
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
        assert self._tools is not None
        if not self._should_continue_as_new() or not self._gate.idle():
            return False
        return all(
            self._tools.waiting_on_reviewer(state) for state in turn.calls if state.result is None
        )

    async def _call(self, step: int, state: CallState, reasoning: str) -> None:
        assert self._tools is not None
        requester = self._requester
        context = ApprovalContext(
            original_request=clip(self._run.task, MAX_REASONING_CHARS),
            reasoning=reasoning,
            step=step,
            requested_by=requester.requested_by if requester else self._run.requested_by,
            requester_verified=requester.verified if requester else False,
        )
        state.result = await self._tools.call(state, context)
        self._keep_run(step, state, state.approval_id)

    def _keep_run(self, step: int, state: CallState, approval_id: str | None) -> None:
        assert state.result is not None
        self._tool_runs.append(
            ToolRun(
                step=step,
                call_id=state.call.id,
                tool=clip(state.call.name, 100),
                args=compact(state.call.arguments),
                approval_id=approval_id,
                result=state.result.model_copy(update={"output": compact(state.result.output)}),
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
        await self._gate.settle()
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
            requester=self._requester,
        )
        workflow.logger.info(
            "Continuing as new at step %d with %d pending approval(s)",
            self._step,
            len(carry.gate.pending),
        )
        tools = list(self._tools.tools.values()) if self._tools else self._run.tools
        workflow.continue_as_new(self._run.model_copy(update={"carry": carry, "tools": tools}))

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

    async def _verify_start(self, run: RunInput) -> StartCheck:
        """Who asked for this run, as the worker can prove it (a signed start)."""
        info = workflow.info()
        return await self._ask_worker(
            StartCheckRequest(
                workflow_id=info.workflow_id,
                run=run.model_dump(mode="json", exclude_defaults=True, exclude={"carry"}),
                started_at=info.workflow_start_time,
            ),
            retry=LLM_RETRY,
            summary="verify who started the run",
            refused=("UnverifiedRequester", "the run's requester could not be verified"),
        )

    async def _verify_continuation(self) -> None:
        """A carry is believed only from this workflow's own earlier run on this queue."""
        info = workflow.info()
        await self._ask_worker(
            StartCheckRequest(
                workflow_id=info.workflow_id,
                run={},
                started_at=info.workflow_start_time,
                continued_from=info.continued_run_id,
                workflow_type=info.workflow_type,
                task_queue=info.task_queue,
            ),
            # A run may have waited days for this point: a server that doesn't answer for
            # a while must not fail it, so ask until it does.
            retry=CONTINUATION_RETRY,
            summary="verify the run this one continued from",
            refused=("ForgedCarry", "this run's carry was not written by this workflow"),
        )

    async def _ask_worker(
        self,
        request: StartCheckRequest,
        *,
        retry: RetryPolicy,
        summary: str,
        refused: tuple[str, str],
    ) -> StartCheck:
        """The `verify_start` local activity (keys and config stay on the worker); its
        refusal fails the run, non-retryably, as `refused` (type, what could not be)."""
        check: StartCheck = await workflow.execute_local_activity(
            contract.ACTIVITY_VERIFY_START,
            request,
            result_type=StartCheck,
            start_to_close_timeout=VERIFY_START_TIMEOUT,
            retry_policy=retry,
            summary=summary,
        )
        if check.refusal:
            kind, what = refused
            raise ApplicationError(f"{what}: {check.refusal}", type=kind, non_retryable=True)
        return check

    async def _worker_tools(self, run: RunInput) -> list[ToolDescriptor]:
        """The run's tools as this worker defines them: their policy is the worker's.

        Descriptors in a started run's input are not believed: a client could say a
        flagged tool needs approval "never". They only name the tools and pin the
        definitions the starter saw; a worker whose tool differs refuses the run now.
        """
        names = [tool.name for tool in run.tools] if run.tools is not None else run.tool_names
        tools = await self._describe_tools(names)
        if run.tools is not None:
            mine = {tool.name: tool for tool in tools}
            changed = [
                f"{tool.name} ({tool.digest} there, {mine[tool.name].digest} here)"
                for tool in run.tools
                if tool.model_dump(
                    exclude={"approval_timeout_seconds", "execution_timeout_seconds"}
                )
                != mine[tool.name].model_dump(
                    exclude={"approval_timeout_seconds", "execution_timeout_seconds"}
                )
            ]
            if changed:
                raise ApplicationError(
                    "the run was started with tool definitions that differ from this "
                    f"worker's: {', '.join(changed)}; start it again with the worker's tools "
                    "(starter.py --tools NAMES asks the worker for them)",
                    type="ToolMismatch",
                    non_retryable=True,
                )
        return tools

    async def _describe_tools(self, names: list[str] | None) -> list[ToolDescriptor]:
        """The worker's tools, asked once and recorded: the run keeps them for its life."""
        try:
            tools: list[ToolDescriptor] = await workflow.execute_activity(
                contract.ACTIVITY_DESCRIBE_TOOLS,
                names,
                result_type=list[ToolDescriptor],
                start_to_close_timeout=DESCRIBE_TIMEOUT,
                retry_policy=LLM_RETRY,
                summary="describe the tools",
            )
        except ActivityError as error:
            raise ApplicationError(
                f"the run's tools could not be described: {error.cause}",
                type="UnknownTool",
                non_retryable=True,
            ) from error
        return tools

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
                "origin": compact(run.origin, 4_000),
            },
        )
