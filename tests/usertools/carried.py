"""A workflow that continues as new the moment it is told to, carrying its gate's state:
what a revocation sent just before a continue-as-new must survive."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hitl.gate import ApprovalGate
    from hitl.models import GateState, ToolAction, ToolPreview


@workflow.defn
class Carried:
    """Asks for `pay` twice: once before it continues as new, once after."""

    @workflow.init
    def __init__(self, state: GateState | None) -> None:
        self.gate = ApprovalGate(state=state)
        self.go = False

    @workflow.signal
    def continue_now(self) -> None:
        self.go = True

    @workflow.run
    async def run(self, state: GateState | None) -> str:
        action = ToolAction(tool="pay", args={"to": "ACME" if state is None else "ACME again"})
        outcome = await self.gate.request(action, preview=ToolPreview(summary="pay"), risk=10)
        if state is not None:
            return f"{outcome.status.value} by {outcome.reviewer}"
        await workflow.wait_condition(lambda: self.go)
        await self.gate.settle()
        workflow.continue_as_new(self.gate.snapshot())
