"""Pydantic AI on Temporal, its approvals decided through the approval gate.

    agent = Agent(
        OpenAIChatModel("gpt-5.2"),
        name="support",
        toolsets=[GatedToolset([refund], id="payments")],  # refund: requires_approval=True
        capabilities=[TemporalDurability(), GateApprovals({"refund": ToolRules(risk=80)})],
    )

    @workflow.defn
    class SupportWorkflow:
        __pydantic_ai_agents__ = [agent]

        @workflow.init
        def __init__(self, prompt: str) -> None:
            self.gate = ApprovalGate()

        @workflow.run
        async def run(self, prompt: str) -> str:
            return (await agent.run(prompt)).output

Serve it with both plugins: `Worker(client, ..., workflows=[SupportWorkflow],
plugins=[PydanticAIPlugin(), HitlPlugin()])` (either order).

`GateApprovals` is Pydantic AI's deferred-tool handler hook: a tool registered with
`requires_approval=True`, or one that raises `ApprovalRequired`, is asked about in the
same `agent.run` — every such call of a model step side by side — and the run continues
with `ToolApproved()`, `ToolApproved(override_args=...)` (a reviewer's modification) or
`ToolDenied(reason)` (a rejection or the gate's timeout; the model reads the reason).
Capabilities given per run are refused inside a workflow, so this one is attached when
the agent is built and finds the gate of the workflow running it (`ApprovalGate.current()`).

`GatedToolset` is a `FunctionToolset` whose approved calls run as approved, at most once:
inside the tool's activity it asks the run whether the approval it carries was settled
for exactly these arguments (an approval flag in an activity's payload is only a claim),
and an attempt after the first of an approved call is not repeated, nor is a failed one
retried, unless the tool says it is idempotent (`metadata={"hitl": {"idempotent": True}}`).
The approval id reaches the tool as its idempotency key: `approval_id(ctx)`.

`HitlToolset` offers the worker's `hitl` tools (`HitlPlugin(tools=[...])`, the built-in
toolkits included) to the agent, run in the workflow the way the reference agent runs
them (`hitl.gated_tools.GatedTools.call_by_name`): the worker's `check_tool` validates a
call and applies its policy and preview, the gate asks where the tool says so (once: these
tools are not `requires_approval`, so `GateApprovals` never sees them), and `run_tool`
carries out the approved action with the approval id as its idempotency key.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic_ai import AbstractToolset, FunctionToolset, ToolsetTool
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import (
    ApprovalRequired,
    CallDeferred,
    ModelRetry,
    ToolFailed,
    UserError,
)
from pydantic_ai.messages import ModelResponse, TextPart, ThinkingPart, ToolCallPart
from pydantic_ai.tools import (
    DeferredToolRequests,
    DeferredToolResults,
    RunContext,
    ToolApproved,
    ToolDefinition,
    ToolDenied,
)
from pydantic_core import SchemaValidator, core_schema, to_jsonable_python
from temporalio import activity, workflow
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from hitl import contract
from hitl.gate import ApprovalGate
from hitl.gated_tools import GatedTools, ToolCallOptions
from hitl.models import (
    ApprovalContext,
    ApprovalOutcome,
    ApprovalRecord,
    ApprovalStatus,
    ToolAction,
    ToolPreview,
    ToolResult,
)
from hitl.text import clip

__all__ = [
    "APPROVAL_ID",
    "GateApprovals",
    "GatedToolset",
    "HitlToolset",
    "ToolRules",
    "approval_id",
]

APPROVAL_ID = "hitl_approval_id"
"""The key of the approval id in an approved call's `tool_call_metadata`."""
MAX_ARGS_CHARS = 32_000
"""A call whose arguments are longer than this (as JSON) is denied without asking: no
reviewer reads that much, and the run's history must not carry it."""
MAX_PROMPT_CHARS = 4_000
MAX_REASONING_CHARS = 4_000
MAX_RESULT_CHARS = 16_000
"""A `hitl` tool's result longer than this (as JSON) reaches the model cut, saying so."""


@dataclass(frozen=True)
class ToolRules:
    """The worker's rules for asking about one tool's calls (never the run's input)."""

    risk: int = 50
    timeout: timedelta | None = None
    """How long reviewers have; None: the gate's default."""
    quorum: int = 1
    modifiable: bool = True
    """Whether a reviewer may change the arguments (checked against the tool's schema)."""


@dataclass
class GateApprovals(AbstractCapability[Any]):
    """Decides a Pydantic AI agent's deferred approvals through the running workflow's gate.

    `rules` by tool name, `default` for the rest. Outside a workflow it declines (the
    calls end the run as `DeferredToolRequests`, Pydantic AI's own behaviour).
    """

    rules: Mapping[str, ToolRules] = dataclasses.field(default_factory=dict)
    default: ToolRules = dataclasses.field(default_factory=ToolRules)

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[Any], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        if not workflow.in_workflow() or not requests.approvals:
            return None
        gate = _current_gate()
        context = _context(ctx)
        # Opened one after another, in the model's order (reviewers see them so, and the
        # run's commands don't depend on which worker check answers first); then all are
        # waited for side by side.
        opened = [await self._open(gate, ctx, call, context) for call in requests.approvals]
        answers = await asyncio.gather(*(self._decided(gate, item) for item in opened))
        results = DeferredToolResults()
        for call, (answer, outcome) in zip(requests.approvals, answers, strict=True):
            results.approvals[call.tool_call_id] = answer
            if outcome is not None and outcome.reviewer:
                results.answered_by[call.tool_call_id] = outcome.reviewer
            if isinstance(answer, ToolApproved) and outcome is not None:
                # Merged over what the tool's own ApprovalRequired(metadata=...) carried.
                results.metadata[call.tool_call_id] = {
                    **(requests.metadata.get(call.tool_call_id) or {}),
                    APPROVAL_ID: outcome.approval_id,
                }
        return results

    async def _open(
        self, gate: ApprovalGate, ctx: RunContext[Any], call: ToolCallPart, context: ApprovalContext
    ) -> _Asked:
        """The call's approval opened (the worker's check first), or its answer now."""
        try:
            args = call.args_as_dict()
        except ValueError:
            return _Asked({}, answer=ToolDenied("the call's arguments are not a JSON object"))
        if len(json.dumps(args, default=str)) > MAX_ARGS_CHARS:
            return _Asked(
                args,
                answer=ToolDenied(
                    f"the call's arguments are longer than {MAX_ARGS_CHARS} characters, too "
                    "long for a reviewer to read; it was not made"
                ),
            )
        action = ToolAction(tool=call.tool_name, args=args)
        if gate.rejected_earlier(action) is not None:
            outcome = await gate.request(action)  # rejected again at once, with that reason
            return _Asked(args, answer=_answer(outcome, args), outcome=outcome)
        rules = self.rules.get(call.tool_name, self.default)
        record = await gate.open_call(
            call.tool_name,
            args,
            preview=ToolPreview(summary=_summary(call.tool_name, args)),
            context=context,
            risk=rules.risk,
            args_schema=_schema(ctx, call.tool_name),
            modifiable=rules.modifiable,
            timeout=rules.timeout,
            quorum=rules.quorum,
        )
        return _Asked(args, approval_id=record.id)

    @staticmethod
    async def _decided(
        gate: ApprovalGate, asked: _Asked
    ) -> tuple[ToolApproved | ToolDenied, ApprovalOutcome | None]:
        if asked.answer is not None:
            return asked.answer, asked.outcome
        assert asked.approval_id is not None
        outcome = await gate.wait(asked.approval_id)
        return _answer(outcome, asked.args), outcome


@dataclass
class _Asked:
    """One deferred call: its approval to wait for, or its answer already."""

    args: dict[str, Any]
    approval_id: str | None = None
    answer: ToolApproved | ToolDenied | None = None
    outcome: ApprovalOutcome | None = None


def _current_gate() -> ApprovalGate:
    try:
        return ApprovalGate.current()
    except LookupError as error:
        # A UserError fails the workflow with this sentence (PydanticAIPlugin lists it);
        # a LookupError would fail its task, retried for ever.
        raise UserError(str(error)) from None


def _answer(outcome: ApprovalOutcome, asked: dict[str, Any]) -> ToolApproved | ToolDenied:
    if outcome.approved:
        changed = outcome.status is ApprovalStatus.MODIFIED or outcome.action.args != asked
        return ToolApproved(override_args=outcome.action.args if changed else None)
    if outcome.timed_out:
        return ToolDenied("No reviewer decided in time, so the call was not made.")
    reason = clip(outcome.reason or "no reason given", 1_000)
    if outcome.repeated:
        return ToolDenied(f"The same call was rejected earlier in this run: {reason}")
    return ToolDenied(f"A reviewer rejected the call: {reason}")


def _summary(name: str, args: dict[str, Any]) -> str:
    """`refund(order="A1", amount=500)`, cut to a line (escaped by whatever shows it)."""
    shown = ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in args.items())
    return clip(f"{name}({shown})", 200)


def _schema(ctx: RunContext[Any], name: str) -> dict[str, Any] | None:
    tools = ctx.tool_manager.tools if ctx.tool_manager is not None else None
    tool = (tools or {}).get(name)
    return dict(tool.tool_def.parameters_json_schema) if tool is not None else None


def _context(ctx: RunContext[Any]) -> ApprovalContext:
    """What the reviewer reads about why: the user's prompt and the model's words before
    the calls (both untrusted: cut here, escaped by whatever shows them)."""
    prompt = ctx.prompt
    if not isinstance(prompt, str):
        prompt = " ".join(part for part in prompt or () if isinstance(part, str))
    reasoning = ""
    for message in reversed(ctx.messages):
        if isinstance(message, ModelResponse):
            reasoning = "\n".join(
                part.content
                for part in message.parts
                if isinstance(part, TextPart | ThinkingPart) and part.content
            )
            break
    return ApprovalContext(
        original_request=clip(prompt, MAX_PROMPT_CHARS),
        reasoning=clip(reasoning, MAX_REASONING_CHARS),
        step=ctx.run_step,
    )


def approval_id(ctx: RunContext[Any]) -> str | None:
    """The approval id of the call being carried out, if a reviewer approved it through
    the gate: the same on every attempt, so a tool hands it to the system it acts on as
    its idempotency key."""
    metadata = ctx.tool_call_metadata
    value = metadata.get(APPROVAL_ID) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


class GatedToolset(FunctionToolset[Any]):
    """A `FunctionToolset` whose approved calls run exactly as approved, at most once."""

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        if not activity.in_activity():
            return await super().call_tool(name, tool_args, ctx, tool)
        key = approval_id(ctx)
        approved = key is not None and await _settled(key, name, tool_args, tool)
        if ctx.tool_call_approved and not approved:
            # An approval flag without an approval the run confirms: the call is treated
            # as unapproved (the tool asks again, if it asks).
            ctx = dataclasses.replace(ctx, tool_call_approved=False)
        if tool.tool_def.kind == "unapproved" and not approved:
            raise ToolFailed(
                f"{name} needs a reviewer's approval and this call carries none the run "
                "confirms, so it was not carried out"
            )
        if not approved or _idempotent(tool):
            return await super().call_tool(name, tool_args, ctx, tool)
        if activity.info().attempt > 1:
            raise ToolFailed(
                f"an earlier attempt of this approved {name} call started but did not report "
                "back (the worker may have died); it is not repeated, so it happens at most "
                "once. Check its effect before proposing it again."
            )
        try:
            return await super().call_tool(name, tool_args, ctx, tool)
        except (ToolFailed, ApprovalRequired, CallDeferred, ModelRetry):
            raise  # answers to the model, not failures
        except Exception as error:
            raise ToolFailed(
                f"{name} failed: {type(error).__name__}: {clip(str(error), 500)}. It is not "
                "retried, so it happens at most once; it may or may not have taken effect."
            ) from error


def _idempotent(tool: ToolsetTool[Any]) -> bool:
    own = (tool.tool_def.metadata or {}).get("hitl")
    return isinstance(own, dict) and own.get("idempotent") is True


async def _settled(key: str, name: str, tool_args: dict[str, Any], tool: ToolsetTool[Any]) -> bool:
    """Whether the run settled approval `key` for this very call (asked of the run by query,
    from the tool's activity; the run is trusted code, an activity's payload is not)."""
    info = activity.info()
    handle = activity.client().get_workflow_handle(
        info.workflow_id or "", run_id=info.workflow_run_id
    )
    for wait in (0.2, 0.5, 1, 2, 4, None):
        try:
            records = await handle.query(
                contract.QUERY_APPROVALS, {"ids": [key]}, result_type=list[ApprovalRecord]
            )
            break
        except WorkflowQueryFailedError:
            return False
        except RPCError as error:
            # Asked again here, not by a retry of the activity: a second attempt of an
            # approved call is taken for one whose first may have acted.
            if wait is None:
                raise ToolFailed(
                    f"{name} was not carried out: its run could not confirm approval {key} "
                    f"({clip(error.message, 200)})"
                ) from None
            await asyncio.sleep(wait)
    record = next((r for r in records if r.id == key), None)
    if record is None or record.status not in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED):
        return False
    action = record.effective_action
    if action.tool != name:
        return False
    try:
        approved = tool.args_validator.validate_python(action.args)
    except Exception:
        return False
    return bool(to_jsonable_python(approved) == to_jsonable_python(tool_args))


# --- the worker's hitl tools as a toolset ----------------------------------------------

_ANY_ARGS = SchemaValidator(core_schema.any_schema())
"""The arguments pass through as the model wrote them: the worker's `check_tool` validates
them against the tool's own model (and says what is wrong, for the model to fix)."""

Options = ToolCallOptions | Callable[[RunContext[Any]], ToolCallOptions]


class HitlToolset(AbstractToolset[Any]):
    """The worker's `hitl` tools `names` (all of them when None, the built-in toolkits
    included when the worker has them: `HitlPlugin(tools=["builtin"])`) as tools of a
    Pydantic AI agent on Temporal.

    A call runs in the workflow through `GatedTools.call_by_name`: checked by the worker's
    `check_tool` (policy, preview, risk), asked of the gate where the tool needs approval
    (once: these tools are not `requires_approval`), and carried out by `run_tool` with the
    approval id as its idempotency key, so an approved call happens at most once. The model
    reads the `ToolResult` (`ok`, `output`, `error`: a reviewer's rejection with its reason,
    invalid arguments, a timeout).

    `options` are the run's choices (`ToolCallOptions`: the workspace, stricter timeouts),
    or a function of the run's context that returns them (the workspace from the agent's
    `deps`, say). The tools are asked of the worker (the `describe_tools` activity) when
    a run first lists them and kept for that run. Pydantic AI's Temporal durability runs
    a toolset of its own kind (`FunctionToolset`, `MCPToolset`, `DynamicToolset`) in
    activities and leaves any other in the workflow: this one must stay there, since the
    gate's wait and the activities it starts are workflow code.
    """

    def __init__(
        self,
        names: Sequence[str] | None = None,
        options: Options | None = None,
        *,
        id: str | None = "hitl",
    ) -> None:
        self.names = list(names) if names is not None else None
        self.options = options
        self._id = id
        self._tools: GatedTools | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def id(self) -> str | None:
        return self._id

    async def for_run(self, ctx: RunContext[Any]) -> AbstractToolset[Any]:
        # The toolset is built with the agent, at import; each run gets its own tools
        # (its gate, its options, its recorded descriptors).
        run = copy.copy(self)
        run._tools, run._lock = None, None
        return run

    async def tools_of_run(self, ctx: RunContext[Any]) -> GatedTools:
        """The run's `GatedTools`, asked of the worker on first use."""
        if not workflow.in_workflow():
            raise UserError(
                "hitl tools run only inside a Temporal workflow that made an ApprovalGate "
                "(the gate asks the reviewers; its activities carry the calls out)"
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._tools is None:
                options = self.options(ctx) if callable(self.options) else self.options
                self._tools = await GatedTools.of_worker(_current_gate(), self.names, options)
        return self._tools

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        tools = await self.tools_of_run(ctx)
        return {
            descriptor.name: ToolsetTool(
                toolset=self,
                tool_def=ToolDefinition(
                    name=descriptor.name,
                    description=descriptor.description,
                    parameters_json_schema=descriptor.parameters,
                    metadata={"hitl": {"approval": descriptor.approval}},
                ),
                max_retries=0,
                args_validator=_ANY_ARGS,
            )
            for descriptor in tools.descriptors()
        }

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        tools = await self.tools_of_run(ctx)
        call_id = clip(ctx.tool_call_id, 100) if ctx.tool_call_id else None
        result = await tools.call_by_name(name, tool_args, _context(ctx), call_id=call_id)
        return _tool_return(result)


def _tool_return(result: ToolResult) -> Any:
    """What the model reads: the result without the reviewer's one-line summary, cut."""
    shown = result.model_dump(mode="json", exclude={"summary"})
    text = json.dumps(shown, ensure_ascii=False)
    if len(text) <= MAX_RESULT_CHARS:
        return shown
    return clip(text, MAX_RESULT_CHARS) + " [the result was cut short: ask for a smaller part]"
