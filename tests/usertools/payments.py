"""A plain Temporal workflow (no LLM, no agent loop) that asks for approval through the gate."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from hitl.gate import ApprovalGate
    from hitl.models import ApprovalContext, ToolAction, ToolPreview


class Payment(BaseModel):
    payee: str
    amount: float = Field(gt=0)
    timeout_seconds: float = 300


PAID: list[dict] = []


@activity.defn
async def pay(payment: Payment) -> str:
    PAID.append(payment.model_dump())
    return f"paid {payment.payee} ${payment.amount:.2f}"


@workflow.defn
class PaymentApproval:
    """Pays out only what a person approved; the gate owns approve/reject/modify."""

    @workflow.init
    def __init__(self, payment: Payment) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, payment: Payment) -> str:
        outcome = await self.gate.request(
            ToolAction(tool="pay", args=payment.model_dump()),
            preview=ToolPreview(summary=f"pay {payment.payee} ${payment.amount:.2f}"),
            context=ApprovalContext(original_request="monthly supplier payout"),
            timeout=timedelta(seconds=payment.timeout_seconds),
            risk=70,
            validate=Payment,
        )
        if not outcome.approved:
            return f"not paid: {outcome.reason}"
        return await workflow.execute_activity(
            pay,
            Payment.model_validate(outcome.action.args),
            start_to_close_timeout=timedelta(seconds=30),
        )
