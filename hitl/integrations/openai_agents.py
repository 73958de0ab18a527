"""The approval gate behind the OpenAI Agents SDK on Temporal (`temporalio-openai-agents`).

Tools keep the SDK's own `needs_approval`. The SDK stops a run at the calls that need
approval (`result.interruptions`) and has no in-run callback for function tools, so this
module owns the run loop: `run_gated` runs the agent (under `OpenAIAgentsPlugin` the
model calls are activities), asks the workflow's gate about every interruption of a turn
side by side, hands the SDK each decision and resumes the run, until the agent answers:

    @workflow.defn
    class Support:
        @workflow.init
        def __init__(self, request: str) -> None:
            self.gate = ApprovalGate()

        @workflow.run
        async def run(self, request: str) -> str:
            gated = await run_gated(agent, request, tools={"refund": ToolPolicy(risk=70)})
            return str(gated.final_output)

Decisions map onto the SDK: approve → `RunState.approve`; reject and time out →
`RunState.reject(rejection_message=...)`, so the model reads the reviewer's reason;
modify → the reviewer's arguments replace the model's for that call id in the run state,
so the tool runs with them and the conversation shows the call as it ran. Hosted and MCP
tools' calls can't run with other arguments: their approvals refuse modifications.

`gated_activity_tool` is `activity_as_tool` with approval: the activity runs with the
approval id as its activity id, which `approval_key()` returns inside the activity as the
idempotency key, so an approved call has its effect once even when the activity retries.

Long runs: with `continue_when`, `run_gated` stops waiting when it says so (and no decision
is being judged) and returns a `carry` (the SDK's run state and which approvals its calls
wait on); pass it back as `carried=` in the next run, whose gate was made with
`ApprovalGate(state=carry.gate)`. Pending approvals keep their ids and deadlines.

`hitl_tools` offers the worker's `hitl` tools (the built-in toolkits included) as the
agent's function tools: each call goes through the worker's `check_tool`, the gate where
the tool asks for approval (the tool's own preview, risk and quorum), and `run_tool` with
the approval id as idempotency key. They don't use the SDK's `needs_approval`: the gate
asks inside the call, once, so they run under `Runner.run` as well as under `run_gated`.

Worker: `Client.connect(..., plugins=[OpenAIAgentsPlugin(...), HitlPlugin()])`, in this
order (`OpenAIAgentsPlugin` refuses a payload converter set before it; the other order
fails at once with a sentence saying so).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from agents import Agent, FunctionTool, ItemHelpers, RunConfig, RunResult, RunState
from agents.function_schema import function_schema
from agents.items import MessageOutputItem, ReasoningItem, ToolApprovalItem
from agents.run import DEFAULT_MAX_TURNS, Runner, get_default_agent_runner
from agents.tool import Tool, ToolOriginType
from agents.tool_context import ToolContext
from pydantic import BaseModel, Field
from pydantic_core import to_json
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RetryPolicy
from temporalio.converter import EncodingPayloadConverter
from temporalio.openai_agents import OpenAIPayloadConverter
from temporalio.openai_agents.workflow import activity_as_tool

from hitl.gate import ApprovalGate, schema_validator
from hitl.gated_tools import GatedTools, ToolCallOptions
from hitl.models import (
    ApprovalContext,
    ApprovalOutcome,
    ApprovalStatus,
    GateState,
    ToolAction,
    ToolDescriptor,
    ToolPreview,
    ToolResult,
)
from hitl.text import clip

__all__ = [
    "AgentsCarry",
    "GatedResult",
    "HitlOpenAIPayloadConverter",
    "ToolPolicy",
    "approval_key",
    "function_tools",
    "gated_activity_tool",
    "hitl_tools",
    "rejection_message",
    "run_gated",
    "tool_output",
]

MAX_ARGUMENTS_CHARS = 32_000
"""A call whose arguments are longer than this is rejected without asking anyone."""
MAX_REASONING_CHARS = 2_000
MAX_REQUEST_CHARS = 4_000
MAX_TOOL_OUTPUT_CHARS = 16_000
"""What a `hitl` tool's call hands back to the model is cut to this many characters."""

_APPROVAL_IDS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "hitl_openai_agents_approval_ids", default=None
)
"""Call id → approval id of the run resuming now, for the tools that run its calls."""


@dataclass(frozen=True)
class ToolPolicy:
    """How the gate treats one tool's calls; worker code, never run input.

    `preview` builds what the reviewer reads from the call's arguments; it runs in the
    workflow, so it must be deterministic (no I/O).
    """

    risk: int = 50
    timeout: timedelta | None = None
    quorum: int = 1
    preview: Callable[[dict[str, Any]], ToolPreview] | None = None


class AgentsCarry(BaseModel):
    """What a run continued as new needs: the SDK's run state and the waiting approvals."""

    run_state: dict[str, Any]
    """`RunState.to_json()` of the interrupted run."""
    gate: GateState
    """`ApprovalGate(state=carry.gate)` in the next run's `__init__`."""
    approvals: dict[str, str] = Field(default_factory=dict)
    """Call id → approval id, for every call the gate was asked about."""
    pending: list[str] = Field(default_factory=list)
    """Call ids still waiting for a decision."""
    request: str = ""


@dataclass
class GatedResult:
    """`run_gated`'s answer: the finished run, or the carry of a run to continue as new."""

    result: RunResult | None
    carry: AgentsCarry | None = None
    outcomes: list[ApprovalOutcome] = field(default_factory=list)
    """Every decision the gate made during this call, in the order they were applied."""

    @property
    def final_output(self) -> Any:
        return None if self.result is None else self.result.final_output


class _WholeModels(EncodingPayloadConverter):
    """OpenAI's JSON converter, except that models of ours travel whole.

    OpenAI's serializes with `exclude_unset` (its response models must not gain fields the
    API never sent); a gate record whose decision log was appended to, never assigned,
    would arrive without it. The model calls' payloads (dicts and the SDK's dataclasses)
    go as OpenAI's converter sends them; any other pydantic model, alone or in a list
    or dict, goes whole.
    """

    def __init__(self, openai: EncodingPayloadConverter) -> None:
        self.openai = openai

    @property
    def encoding(self) -> str:
        return self.openai.encoding

    def to_payload(self, value: Any) -> Payload | None:
        if _ours(value):
            return Payload(metadata={"encoding": self.encoding.encode()}, data=to_json(value))
        return self.openai.to_payload(value)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        return self.openai.from_payload(payload, type_hint)


def _ours(value: Any) -> bool:
    if isinstance(value, BaseModel):
        return not type(value).__module__.startswith(("openai.", "agents."))
    if isinstance(value, (list, tuple)):
        return any(_ours(item) for item in value)
    if isinstance(value, dict):
        return any(_ours(item) for item in value.values())
    return False


class HitlOpenAIPayloadConverter(OpenAIPayloadConverter):
    """The payload converter where `HitlPlugin` and `OpenAIAgentsPlugin` serve together:
    `HitlPlugin`, after `OpenAIAgentsPlugin`, puts it in place of OpenAI's, of which it is
    a kind, so the gate's records keep every field."""

    def __init__(self) -> None:
        super().__init__()
        self._set_converters(
            *(
                _WholeModels(converter) if converter.encoding == "json/plain" else converter
                for converter in self.converters.values()
            )
        )


def approval_key() -> str:
    """Inside an activity run by `gated_activity_tool`: the approval id of the call (its
    activity id), the idempotency key of the call's effect."""
    return activity.info().activity_id


def rejection_message(outcome: ApprovalOutcome) -> str:
    """What the model reads for a call the gate did not approve."""
    reason = outcome.reason or "no reason given"
    if outcome.repeated:
        return f"Rejected: the same call was rejected earlier in this run ({reason})."
    if outcome.timed_out:
        return f"Rejected: no reviewer decided in time ({reason})."
    return f"Rejected by the reviewer: {reason}"


def gated_activity_tool(
    fn: Callable[..., Any],
    *,
    needs_approval: bool = True,
    start_to_close_timeout: timedelta | None = timedelta(minutes=5),
    retry_policy: RetryPolicy | None = None,
    task_queue: str | None = None,
    summary: str | None = None,
) -> FunctionTool:
    """`activity_as_tool(fn)` that asks for approval, and runs an approved call's activity
    with the approval id as activity id (`approval_key()` in the activity)."""
    base = activity_as_tool(fn)  # checks fn is a named activity, as the plugin does
    assert isinstance(base, FunctionTool)
    schema = function_schema(fn)
    if schema.takes_context:
        raise ValueError(f"{base.name}: a gated activity tool takes no run context")

    async def invoke(ctx: Any, input: str) -> str:
        data = json.loads(input or "{}")
        args, _ = schema.to_call_args(schema.params_pydantic_model(**data))
        call_id = getattr(ctx, "tool_call_id", None)
        approval_id = (_APPROVAL_IDS.get() or {}).get(call_id) if call_id else None
        # Scheduled inside the approval's span (telemetry on): the tool's spans are its children.
        allowed = (
            ApprovalGate.current().telemetry.allowed_by(approval_id)
            if approval_id
            else nullcontext()
        )
        with allowed:
            handle = workflow.start_activity(
                base.name,
                args=args,
                activity_id=approval_id,
                task_queue=task_queue,
                start_to_close_timeout=start_to_close_timeout,
                retry_policy=retry_policy,
                summary=summary or f"{base.name} ({approval_id or 'not gated'})",
            )
        return str(await handle)

    return FunctionTool(
        name=base.name,
        description=base.description,
        params_json_schema=base.params_json_schema,
        on_invoke_tool=invoke,
        strict_json_schema=base.strict_json_schema,
        needs_approval=needs_approval,
    )


async def hitl_tools(
    gate: ApprovalGate | None = None,
    names: Sequence[str] | None = None,
    options: ToolCallOptions | None = None,
    *,
    request: ApprovalContext | str = "",
) -> list[Tool]:
    """The worker's `hitl` tools `names` (all when None, the built-in toolkits included
    where the worker has them: `HitlPlugin(tools=["builtin"])`) as the SDK's function
    tools (a `FunctionTool` each), for an agent run in this workflow.

    Asked of the worker once (`GatedTools.of_worker`, recorded in history). A call runs
    `GatedTools.call_by_name`: the worker checks it and applies the tool's policy, a
    call that needs approval waits for a reviewer (`hitl pending` shows the tool's own
    preview), and the approved action runs with the approval id as its idempotency key,
    at most once. The model reads the result (`tool_output`): the output, or the error
    (a rejection with the reviewer's reason, invalid arguments). `gate`: the workflow's
    (default `ApprovalGate.current()`); `options`: the run's workspace and limits;
    `request`: what the reviewer reads as the request behind the calls.
    """
    gated = await GatedTools.of_worker(gate or ApprovalGate.current(), names, options)
    return function_tools(gated, request=request)


def function_tools(gated: GatedTools, *, request: ApprovalContext | str = "") -> list[Tool]:
    """`hitl_tools` over a `GatedTools` the workflow already has."""
    return [_function_tool(gated, descriptor, request) for descriptor in gated.descriptors()]


def _function_tool(
    gated: GatedTools, descriptor: ToolDescriptor, request: ApprovalContext | str
) -> FunctionTool:
    name = descriptor.name

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        call_id = getattr(ctx, "tool_call_id", None)
        result = await gated.call_by_name(name, arguments, request, call_id=call_id)
        return tool_output(result)

    return FunctionTool(
        name=name,
        description=descriptor.description,
        params_json_schema=copy.deepcopy(descriptor.parameters),
        on_invoke_tool=invoke,
        # The tool's own schema as it is: strict mode would make every optional argument
        # required and rewrite the schema. The worker's check validates the arguments.
        strict_json_schema=False,
        # The gate asks inside the call (where the tool's policy says so): never twice.
        needs_approval=False,
    )


def tool_output(result: ToolResult, limit: int = MAX_TOOL_OUTPUT_CHARS) -> str:
    """What the model reads of a `hitl` tool's call: its output (JSON unless a str), or
    its error followed by whatever output it has; at most `limit` characters."""
    output = (
        None
        if result.output is None
        else result.output
        if isinstance(result.output, str)
        else json.dumps(result.output, ensure_ascii=False, default=str)
    )
    if result.ok:
        text = output if output is not None else (result.summary or "done")
    else:
        text = f"Error: {result.error or result.summary or 'the tool failed'}"
        if output is not None:
            text += f"\n{output}"
    return clip(text, limit)


async def run_gated(
    agent: Agent[Any],
    input: str | list[Any],
    *,
    gate: ApprovalGate | None = None,
    context: Any = None,
    max_turns: int = DEFAULT_MAX_TURNS,
    run_config: RunConfig | None = None,
    tools: Mapping[str, ToolPolicy] | None = None,
    requested_by: str = "",
    carried: AgentsCarry | None = None,
    continue_when: Callable[[], bool] | None = None,
) -> GatedResult:
    """Run `agent` on `input` in this workflow, every interruption decided by the gate.

    `gate`: the workflow's gate (default `ApprovalGate.current()`). `context`: the SDK's
    run context. `tools`: each tool's `ToolPolicy` by name (default `ToolPolicy()`).
    `carried`: a carry from the run this one continued (then `input` is ignored).
    `continue_when`: asked while approvals are pending; when true, `run_gated` returns
    a `carry` instead of waiting on.
    """
    gated = _GatedRun(
        agent,
        gate or ApprovalGate.current(),
        tools or {},
        requested_by,
        max_turns,
        run_config,
        continue_when,
    )
    return await gated.run(input, context, carried)


class _GatedRun:
    def __init__(
        self,
        agent: Agent[Any],
        gate: ApprovalGate,
        tools: Mapping[str, ToolPolicy],
        requested_by: str,
        max_turns: int,
        run_config: RunConfig | None,
        continue_when: Callable[[], bool] | None,
    ) -> None:
        self.agent = agent
        self.gate = gate
        self.tools = tools
        self.requested_by = requested_by
        self.max_turns = max_turns
        self.run_config = run_config
        self.continue_when = continue_when
        self.approvals: dict[str, str] = {}
        self.outcomes: list[ApprovalOutcome] = []
        self.request = ""
        self.turn = 0

    async def run(
        self, input: str | list[Any], context: Any, carried: AgentsCarry | None
    ) -> GatedResult:
        pending: dict[str, str] = {}
        skip: set[str] = set()
        if carried is not None:
            self.request = carried.request
            self.approvals = dict(carried.approvals)
            pending = {call_id: self.approvals[call_id] for call_id in carried.pending}
            # Calls decided before the carry: their decisions are in the run state.
            skip = set(self.approvals) - set(pending)
            state = await RunState.from_json(_temporal_agent(self.agent), carried.run_state)
            reasoning = ""
        else:
            self.request = clip(_request_text(input), MAX_REQUEST_CHARS)
            result = await self._run(self.agent, input, context=context)
            if not result.interruptions:
                return GatedResult(result, outcomes=self.outcomes)
            state = result.to_state()
            reasoning = _reasoning(result)
        while True:
            self.turn += 1
            items = [item for item in state.get_interruptions() if item.call_id not in skip]
            decided, carry = await self._decide(state, items, pending, reasoning)
            pending, skip = {}, set()
            state = await self._apply(state, decided)
            if carry is not None:
                await self.gate.settle()
                carry.run_state = state.to_json()
                carry.gate = self.gate.snapshot()
                return GatedResult(None, carry=carry, outcomes=self.outcomes)
            result = await self._run(_temporal_agent(self.agent), state)
            if not result.interruptions:
                return GatedResult(result, outcomes=self.outcomes)
            state = result.to_state()
            reasoning = _reasoning(result)

    async def _run(self, agent: Agent[Any], input: Any, **options: Any) -> RunResult:
        token = _APPROVAL_IDS.set(dict(self.approvals))
        try:
            return await Runner.run(
                agent, input, max_turns=self.max_turns, run_config=self.run_config, **options
            )
        finally:
            _APPROVAL_IDS.reset(token)

    async def _decide(
        self,
        state: RunState[Any, Any],
        items: list[ToolApprovalItem],
        pending: Mapping[str, str],
        reasoning: str,
    ) -> tuple[list[tuple[ToolApprovalItem, ApprovalOutcome]], AgentsCarry | None]:
        """Ask about every call of the turn at once; wait for all, or until the run
        should continue as new."""
        decided: list[tuple[ToolApprovalItem, ApprovalOutcome]] = []
        waiting: dict[str, asyncio.Task[ApprovalOutcome]] = {}
        by_call: dict[str, ToolApprovalItem] = {}
        for index, item in enumerate(items):
            call_id = item.call_id or f"call-{self.turn}-{index}"
            by_call[call_id] = item
            tool, args, schema, modifiable = _call_of(item)
            validate = schema_validator(schema) if modifiable and schema else None
            if call_id in pending:
                if pending[call_id] not in self.gate.ledger.records:
                    raise LookupError(
                        f"approval {pending[call_id]} was carried but the gate does not have "
                        "it: make the continued run's gate with ApprovalGate(state=carry.gate)"
                    )
                waiting[call_id] = asyncio.create_task(
                    self.gate.wait(pending[call_id], validate=validate)
                )
                continue
            action = ToolAction(tool=tool, args=args or {})
            refused = _refuse_unread(tool, args) or _repeated(self.gate, action)
            if refused is not None:
                decided.append((item, refused))
                continue
            policy = self.tools.get(tool, ToolPolicy())
            preview = _preview(policy, action)
            if not modifiable:
                preview = preview.model_copy(
                    update={
                        "warnings": [
                            *preview.warnings,
                            f"{tool} is a hosted or MCP tool: the SDK runs its calls only as "
                            "the model made them, so approve or reject (no modify)",
                        ]
                    }
                )
            # The worker has its say first (its previewer, risk, quorum, timeout, the
            # auto-approve threshold, from its reviewers file); the tool's policy here may
            # only make it stricter.
            record = await self.gate.open_call(
                tool,
                action.args,
                preview=preview,
                context=ApprovalContext(
                    original_request=self.request,
                    reasoning=clip(reasoning, MAX_REASONING_CHARS),
                    step=self.turn,
                    requested_by=self.requested_by,
                ),
                timeout=policy.timeout,
                risk=policy.risk,
                validate=validate,
                modifiable=modifiable,
                args_schema=schema if modifiable else None,
                quorum=policy.quorum,
            )
            self.approvals[call_id] = record.id
            waiting[call_id] = asyncio.create_task(self.gate.wait(record.id))
        if waiting:
            tasks = list(waiting.values())
            await workflow.wait_condition(
                lambda: all(task.done() for task in tasks) or self._should_continue()
            )
        carry: AgentsCarry | None = None
        still = [call_id for call_id, task in waiting.items() if not task.done()]
        if still:
            for call_id in still:
                waiting[call_id].cancel()
            await asyncio.gather(*(waiting[call_id] for call_id in still), return_exceptions=True)
            carry = AgentsCarry(
                run_state={},
                gate=GateState(),
                approvals=dict(self.approvals),
                pending=still,
                request=self.request,
            )
        for call_id, task in waiting.items():
            if call_id not in still:
                decided.append((by_call[call_id], task.result()))
        return decided, carry

    def _should_continue(self) -> bool:
        return self.continue_when is not None and self.continue_when() and self.gate.idle()

    async def _apply(
        self,
        state: RunState[Any, Any],
        decided: list[tuple[ToolApprovalItem, ApprovalOutcome]],
    ) -> RunState[Any, Any]:
        """Hand the SDK the decisions: approve, reject with the reason, or approve the
        reviewer's arguments (written into the run state for that call id)."""
        modified = {
            item.call_id: outcome.action.args
            for item, outcome in decided
            if outcome.status is ApprovalStatus.MODIFIED and item.call_id
        }
        if modified:
            state = await _with_arguments(state, modified, _temporal_agent(self.agent))
        current = {item.call_id: item for item in state.get_interruptions()}
        for item, outcome in decided:
            self.outcomes.append(outcome)
            target = current.get(item.call_id, item)
            if outcome.approved:
                state.approve(target)
            else:
                state.reject(target, rejection_message=rejection_message(outcome))
        return state


def _call_of(
    item: ToolApprovalItem,
) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None, bool]:
    """The call's tool, arguments (None if unreadable), JSON schema, and whether the
    SDK can run it with other arguments (a function tool of the agent's own)."""
    tool = item.name or "unknown_tool"
    raw = item.arguments or "{}"
    args: dict[str, Any] | None = None
    if len(raw) <= MAX_ARGUMENTS_CHARS:
        try:
            loaded = json.loads(raw)
        except ValueError:
            loaded = None
        args = loaded if isinstance(loaded, dict) else None
    raw_type = (
        item.raw_item.get("type")
        if isinstance(item.raw_item, dict)
        else getattr(item.raw_item, "type", None)
    )
    origin = item.tool_origin.type if item.tool_origin is not None else ToolOriginType.FUNCTION
    function = next(
        (
            candidate
            for candidate in getattr(item.agent, "tools", [])
            if isinstance(candidate, FunctionTool) and candidate.name == tool
        ),
        None,
    )
    modifiable = (
        raw_type == "function_call" and origin is ToolOriginType.FUNCTION and function is not None
    )
    schema = function.params_json_schema if function is not None else None
    return tool, args, schema, modifiable


def _refuse_unread(tool: str, args: dict[str, Any] | None) -> ApprovalOutcome | None:
    """A call no reviewer can read (too long, not a JSON object) is rejected unasked."""
    if args is not None:
        return None
    return ApprovalOutcome(
        approval_id="",
        status=ApprovalStatus.REJECTED,
        action=ToolAction(tool=tool, args={}),
        reviewer="policy",
        reason=(
            f"the arguments are not a JSON object of at most {MAX_ARGUMENTS_CHARS} characters; "
            "call the tool again with proper arguments"
        ),
    )


def _repeated(gate: ApprovalGate, action: ToolAction) -> ApprovalOutcome | None:
    """A call identical to one rejected earlier in this run's chain: rejected at once."""
    earlier = gate.rejected_earlier(action)
    if earlier is None:
        return None
    return ApprovalOutcome(
        approval_id=earlier.approval_id,
        status=ApprovalStatus.REJECTED,
        action=action,
        reviewer=earlier.reviewer,
        reason=earlier.reason,
        repeated=True,
    )


def _preview(policy: ToolPolicy, action: ToolAction) -> ToolPreview:
    """The tool's preview of the call; one that fails leaves the reviewer the arguments."""
    if policy.preview is None:
        return ToolPreview(summary=f"call {action.tool}")
    try:
        return policy.preview(action.args)
    except Exception as error:  # the preview's own bug must not fail the run
        return ToolPreview(
            summary=f"call {action.tool}",
            failed=True,
            warnings=[clip(f"the preview failed: {error}", 300)],
        )


async def _with_arguments(
    state: RunState[Any, Any], arguments: Mapping[str, dict[str, Any]], agent: Agent[Any]
) -> RunState[Any, Any]:
    """The run state with the reviewer's arguments for these call ids.

    The SDK has no "approve with other arguments"; its serialized state is its public
    form, so the arguments are replaced there, everywhere the call appears (the model's
    response, the generated items, the pending step), and the call's entry in the SDK's
    invocation ledger (keyed by a fingerprint of the old arguments) is dropped so that
    approving registers the call as it now is.
    """
    data = state.to_json()
    texts = {call_id: json.dumps(args) for call_id, args in arguments.items()}

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            call_id = node.get("call_id")
            if call_id in texts and isinstance(node.get("arguments"), str):
                node["arguments"] = texts[call_id]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    rewrite(data)
    context = data.get("context")
    ledger = context.get("tool_invocations") if isinstance(context, dict) else None
    if isinstance(ledger, dict):
        for call_id in texts:
            ledger.pop(call_id, None)
    return await RunState.from_json(agent, data)


def _temporal_agent(agent: Agent[Any]) -> Agent[Any]:
    """The agent as `OpenAIAgentsPlugin` runs it (model calls as activities).

    A run resumed from a run state continues with the state's agent, not the one given to
    `Runner.run`; a state rebuilt from JSON must be built over the converted agent, or
    the SDK would call the model from the workflow.
    """
    from temporalio.openai_agents._openai_runner import TemporalOpenAIRunner, _convert_agent

    runner = get_default_agent_runner()
    if not isinstance(runner, TemporalOpenAIRunner):
        raise RuntimeError(
            "run_gated runs the agent under OpenAIAgentsPlugin: add "
            "temporalio.openai_agents.OpenAIAgentsPlugin to the client's or worker's plugins"
        )
    return _convert_agent(runner.model_params, agent, None)


def _request_text(input: str | list[Any]) -> str:
    if isinstance(input, str):
        return input
    texts = [
        str(entry.get("content"))
        for entry in input
        if isinstance(entry, dict) and entry.get("role") == "user" and entry.get("content")
    ]
    return texts[-1] if texts else ""


def _reasoning(result: RunResult) -> str:
    """What the model said with the calls of its last turn: its message or reasoning."""
    for item in reversed(result.new_items):
        if isinstance(item, MessageOutputItem):
            return ItemHelpers.text_message_output(item)
        if isinstance(item, ReasoningItem):
            summary = getattr(item.raw_item, "summary", None) or []
            return " ".join(getattr(part, "text", "") for part in summary)
    return ""
