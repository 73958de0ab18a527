"""A workflow of your own whose approval names a tool and an effect chosen by its input:
what a listing shows must be that text, literally, whatever markup it carries."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hitl.gate import ApprovalGate
    from hitl.models import ApprovalContext, ToolAction, ToolPreview


class Ask(BaseModel):
    tool: str
    summary: str


@workflow.defn
class HostileApproval:
    @workflow.init
    def __init__(self, ask: Ask) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, ask: Ask) -> str:
        outcome = await self.gate.request(
            ToolAction(tool=ask.tool, args={}),
            preview=ToolPreview(summary=ask.summary),
            context=ApprovalContext(original_request="a hostile listing"),
            timeout=timedelta(minutes=5),
        )
        return outcome.status.value
