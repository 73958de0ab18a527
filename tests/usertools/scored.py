"""A plain workflow whose validator scores a modification itself, in the workflow (no
activity between the decision's verification and the ledger's risk rule)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hitl.gate import ApprovalGate, Modification
    from hitl.models import ToolAction


def score(args: dict[str, Any]) -> Modification:
    amount = int(args["amount"])
    return Modification({"amount": amount}, risk=90 if amount > 100 else 10)


@workflow.defn
class ScoredTransfer:
    """One transfer approved through the gate; a modification is scored by `score`."""

    @workflow.init
    def __init__(self, amount: int) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, amount: int) -> str:
        outcome = await self.gate.request(
            ToolAction(tool="transfer", args={"amount": amount}), risk=10, validate=score
        )
        record = self.gate.record(outcome.approval_id)
        return f"{outcome.status.value}: {outcome.action.args} at risk {record.risk}"


class Transfer(BaseModel):
    amount: int
    memo: str = ""


@workflow.defn
class OpenedTransfer:
    """One transfer opened and waited on by hand (`open`, `wait`), its modification checked
    by a pydantic model: the trust rule (keep what the reviewer wrote) is first asked when a
    modification is checked, right after verify_decision."""

    @workflow.init
    def __init__(self, amount: int) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, amount: int) -> str:
        record = self.gate.open(
            ToolAction(tool="transfer", args={"amount": amount}), validate=Transfer
        )
        outcome = await self.gate.wait(record.id)
        return f"{outcome.status.value}: {outcome.action.args}"
