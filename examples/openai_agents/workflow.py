"""The agent and its workflow: the SDK's tools with `needs_approval`, run by `run_gated`.

Workflow code: deterministic, no I/O. The refund runs in the workflow (it only answers);
the email is an activity (`activities.send_email`), so it is a tool through
`gated_activity_tool` and its effect is keyed by the approval id.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agents import Agent, function_tool
    from agents.items import ToolCallOutputItem

    from examples.openai_agents.activities import send_email
    from hitl.gate import ApprovalGate
    from hitl.integrations.openai_agents import (
        AgentsCarry,
        ToolPolicy,
        gated_activity_tool,
        run_gated,
    )
    from hitl.models import ToolPreview

MODEL = "gpt-4o-mini"
"""What the agent asks for; the worker's model provider decides what answers."""


@function_tool
async def lookup_order(order_id: str) -> str:
    """Look up an order: its customer and amount."""
    return f"order {order_id}: customer@example.com, 40 EUR, delivered"


@function_tool(needs_approval=True)
async def refund(order_id: str, amount_eur: int) -> str:
    """Refund part or all of an order."""
    return f"refunded {amount_eur} EUR on order {order_id}"


def refund_preview(args: dict[str, object]) -> ToolPreview:
    return ToolPreview(
        summary=f"refund {args.get('amount_eur')} EUR on order {args.get('order_id')}",
        facts={"amount_eur": args.get("amount_eur")},
    )


AGENT = Agent(
    name="support",
    instructions=(
        "You are a support agent. Look orders up, refund when the customer is owed money, "
        "and email the customer what you did."
    ),
    model=MODEL,
    tools=[
        lookup_order,
        refund,
        gated_activity_tool(send_email, start_to_close_timeout=timedelta(seconds=30)),
    ],
)

POLICY = {
    "refund": ToolPolicy(risk=70, timeout=timedelta(hours=4), preview=refund_preview),
    "send_email": ToolPolicy(risk=30, timeout=timedelta(hours=4)),
}
"""The worker's policy for the agent's tools (never the run's input)."""


class SupportRequest(BaseModel):
    """The workflow's input: the customer's request, or the carry of the run it continues."""

    request: str
    requested_by: str = ""
    approval_timeout_seconds: int | None = None
    """Shorter approval timeouts than the worker's policy (a run may only be stricter)."""
    carried: AgentsCarry | None = None


def stricter(policy: dict[str, ToolPolicy], timeout_seconds: int | None) -> dict[str, ToolPolicy]:
    if timeout_seconds is None:
        return policy
    asked = timedelta(seconds=max(1, timeout_seconds))
    return {
        name: replace(tool, timeout=min(tool.timeout or asked, asked))
        for name, tool in policy.items()
    }


class SupportAnswer(BaseModel):
    answer: str
    tool_outputs: list[str]
    approvals: list[str]
    """Each decision the gate made: approval id and status."""


@workflow.defn
class SupportAgentWorkflow:
    """The support agent; the gate's handlers (decide, approve, reject, modify, approvals)
    and `continue_as_new` (roll over now, pending approvals carried)."""

    @workflow.init
    def __init__(self, run: SupportRequest) -> None:
        self.gate = ApprovalGate(
            state=run.carried.gate if run.carried else None, memo={"task": run.request[:200]}
        )
        self.roll_over = False

    @workflow.signal
    def continue_as_new(self) -> None:
        self.roll_over = True

    @workflow.run
    async def run(self, run: SupportRequest) -> SupportAnswer:
        gated = await run_gated(
            AGENT,
            run.request,
            gate=self.gate,
            tools=stricter(POLICY, run.approval_timeout_seconds),
            requested_by=run.requested_by,
            carried=run.carried,
            continue_when=lambda: self.roll_over or workflow.info().is_continue_as_new_suggested(),
        )
        if gated.carry is not None:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(run.model_copy(update={"carried": gated.carry}))
        assert gated.result is not None
        return SupportAnswer(
            answer=str(gated.final_output),
            tool_outputs=[
                str(item.output)
                for item in gated.result.new_items
                if isinstance(item, ToolCallOutputItem)
            ],
            approvals=[f"{o.approval_id} {o.status.value}" for o in gated.outcomes],
        )
