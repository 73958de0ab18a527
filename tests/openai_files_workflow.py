"""An OpenAI Agents SDK agent whose tools are the worker's built-in `hitl` tools, for
tests/test_openai_agents.py (its own module: the sandbox imports it as it is)."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from agents import Agent, Runner

    from hitl.gate import ApprovalGate
    from hitl.gated_tools import ToolCallOptions
    from hitl.integrations.openai_agents import hitl_tools


class FilesJob(BaseModel):
    workspace: str
    request: str


@workflow.defn
class FilesAgentWorkflow:
    """`find_files` and `delete_files` as the agent's tools, run by the SDK's own
    `Runner.run`: the gate asks inside the calls that need it."""

    @workflow.init
    def __init__(self, job: FilesJob) -> None:
        self.gate = ApprovalGate(title=job.request)

    @workflow.run
    async def run(self, job: FilesJob) -> str:
        tools = await hitl_tools(
            self.gate,
            ["find_files", "delete_files"],
            ToolCallOptions(workspace=job.workspace),
            request=job.request,
        )
        agent = Agent(name="cleaner", instructions="Tidy the workspace.", tools=tools)
        result = await Runner.run(agent, job.request)
        return str(result.final_output)
