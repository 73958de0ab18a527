"""The example's agent and workflow: a support agent on Temporal (Pydantic AI's
`TemporalDurability`) whose refunds and emails wait for a reviewer, through the gate.

The model is OpenAI's (`OPENAI_API_KEY`, `OPENAI_BASE_URL`, `HITL_MODEL`) when a key is
set; otherwise the example's offline scripted server (`scripted_model.py`), whose URL
the runner gives in HITL_EXAMPLE_MODEL_URL. The agent is built when this module is
imported, never inside the workflow (Pydantic AI's rule).
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from openai import AsyncOpenAI
from pydantic_ai import Agent, RunContext
from pydantic_ai.durable_exec.temporal import TemporalDurability
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import workflow

from hitl.gate import ApprovalGate
from hitl.integrations.pydantic_ai import GateApprovals, GatedToolset, ToolRules, approval_id

TASK_QUEUE = "pydantic-ai-example"
LEDGER_ENV = "HITL_EXAMPLE_LEDGER"
"""Where the example's refunds and emails are written (a JSON line each)."""


def _model() -> OpenAIChatModel:
    if os.environ.get("OPENAI_API_KEY"):
        client = AsyncOpenAI(max_retries=0)  # Temporal's retry policy is the one retry
        return OpenAIChatModel(
            os.environ.get("HITL_MODEL") or "gpt-4.1-mini",
            provider=OpenAIProvider(openai_client=client),
        )
    client = AsyncOpenAI(
        base_url=os.environ.get("HITL_EXAMPLE_MODEL_URL") or "http://127.0.0.1:9/v1",
        api_key="offline",
        max_retries=0,
    )
    return OpenAIChatModel("scripted-offline", provider=OpenAIProvider(openai_client=client))


def _record(kind: str, **fields: Any) -> None:
    with open(Path(os.environ.get(LEDGER_ENV) or "example-ledger.jsonl"), "a") as ledger:
        ledger.write(json.dumps({"kind": kind, **fields}) + "\n")


async def lookup_order(order: str) -> str:
    """Look an order up: what it holds, what it cost, how it arrived."""
    return f"{order}: 1 teapot, 4200 cents, delivered 2026-11-20, customer reports it broken"


async def refund(ctx: RunContext[Any], order: str, amount_cents: int) -> str:
    """Refund part or all of an order, in cents."""
    # The approval id is the payment system's idempotency key: one refund per approval.
    _record("refund", order=order, amount_cents=amount_cents, idempotency_key=approval_id(ctx))
    return f"refunded {amount_cents} cents on {order}"


async def send_email(to: str, subject: str, body: str) -> str:
    """Send an email to a customer."""
    _record("email", to=to, subject=subject, body=body)
    return f"email sent to {to}"


tools = GatedToolset(id="support")
tools.add_function(lookup_order)
tools.add_function(refund, requires_approval=True)
tools.add_function(send_email, requires_approval=True)

agent = Agent(
    _model(),
    name="support",
    instructions="You are a support agent. Look orders up before acting on them.",
    toolsets=[tools],
    capabilities=[
        TemporalDurability(),
        GateApprovals(
            {
                "refund": ToolRules(risk=70, timeout=timedelta(minutes=30)),
                "send_email": ToolRules(risk=30, timeout=timedelta(minutes=30)),
            }
        ),
    ],
)


@workflow.defn
class SupportWorkflow:
    """One support request; approvals through the gate's handlers (`hitl approve ...`)."""

    __pydantic_ai_agents__: ClassVar = [agent]

    @workflow.init
    def __init__(self, request: str) -> None:
        self.gate = ApprovalGate(memo={"task": request[:200]})

    @workflow.run
    async def run(self, request: str) -> str:
        result = await agent.run(request)
        return result.output
