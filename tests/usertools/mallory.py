"""Workflows an attacker serves on a task queue of their own (anyone whose Temporal
client may poll a queue can), aiming at the project's worker on its queue."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from hitl import contract
    from hitl.gate import ApprovalGate
    from hitl.models import RunInput, ToolAction, ToolPreview, ToolRequest, ToolResult


@workflow.defn
class Mallory:
    """Asks the worker's queue to run a tool call no reviewer approved."""

    @workflow.run
    async def run(self, request: ToolRequest, queue: str) -> ToolResult:
        return await workflow.execute_activity(
            contract.ACTIVITY_RUN_TOOL,
            request,
            result_type=ToolResult,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
        )


@workflow.defn
class MalloryContinues:
    """Continues as new as the agent, on the worker's queue, with a carry it wrote itself."""

    @workflow.run
    async def run(self, run: RunInput, queue: str) -> None:
        workflow.continue_as_new(run, workflow=contract.WORKFLOW_NAME, task_queue=queue)


@workflow.defn
class SkipsTheGate:
    """A workflow of the deployment's own that asks a reviewer about one command, then
    runs another under that approval's id: the worker runs only what was approved."""

    @workflow.init
    def __init__(self, asked: ToolAction, run: ToolAction, workspace: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, asked: ToolAction, run: ToolAction, workspace: str) -> ToolResult:
        outcome = await self.gate.request(asked, preview=ToolPreview(summary="list"), risk=30)
        return await workflow.execute_activity(
            contract.ACTIVITY_RUN_TOOL,
            ToolRequest(action=run, workspace=workspace, idempotency_key=outcome.approval_id),
            result_type=ToolResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
