"""A Pydantic AI agent on Temporal with the gate, as a user writes one, for the tests.

Its model is Pydantic AI's own OpenAI chat model against the tests' local
OpenAI-compatible server (`tests.fake_openai`): the port is read, at each request, from
HITL_TEST_OPENAI_PORT, so the agent can be built when this module is imported (Pydantic
AI's rule: never inside a workflow) and a worker in another process can use it too.
`python -m tests.pydantic_ai_app TASK_QUEUE` runs such a worker.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from datetime import timedelta
from typing import Any, ClassVar

import httpx2
from openai import AsyncOpenAI
from pydantic_ai import Agent, RunContext
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin, TemporalAgent, TemporalDurability
from pydantic_ai.exceptions import ApprovalRequired
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityConfig

from hitl.gate import ApprovalGate
from hitl.gated_tools import ToolCallOptions
from hitl.integrations.pydantic_ai import (
    GateApprovals,
    GatedToolset,
    HitlToolset,
    ToolRules,
    approval_id,
)
from hitl.plugin import HitlPlugin

PORT_ENV = "HITL_TEST_OPENAI_PORT"
EFFECTS_ENV = "HITL_TEST_EFFECTS"
"""A file each side effect appends a line to, so a test in another process counts them."""


class _ToLocalServer(httpx2.AsyncBaseTransport):
    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=int(os.environ[PORT_ENV]))
        return await self._inner.handle_async_request(request)


def fake_model() -> OpenAIChatModel:
    client = AsyncOpenAI(
        base_url="http://127.0.0.1:1/v1",
        api_key="sk-test-local",
        max_retries=0,  # Temporal's retry policy is the one retry
        http_client=httpx2.AsyncClient(transport=_ToLocalServer()),
    )
    return OpenAIChatModel("fake-gpt-1", provider=OpenAIProvider(openai_client=client))


def effect(line: str) -> None:
    with open(os.environ[EFFECTS_ENV], "a") as out:
        out.write(line + "\n")


def effects() -> list[str]:
    try:
        with open(os.environ[EFFECTS_ENV]) as found:
            return found.read().splitlines()
    except FileNotFoundError:
        return []


async def refund(ctx: RunContext[Any], order: str, amount: int) -> str:
    """Refund `amount` cents of an order."""
    effect(f"refund {order} {amount} {approval_id(ctx)}")
    return f"refunded {amount} on {order}"


async def send_email(to: str, subject: str) -> str:
    """Send an email."""
    effect(f"email {to} {subject}")
    return f"sent to {to}"


async def delete_account(ctx: RunContext[Any], user: str) -> str:
    """Delete a user's account; accounts of admins need a reviewer."""
    if user.startswith("admin") and not ctx.tool_call_approved:
        raise ApprovalRequired(metadata={"why": "admin account"})
    effect(f"delete {user}")
    return f"deleted {user}"


async def lookup(order: str) -> str:
    """Look an order up (needs no approval)."""
    return f"{order}: 2 items, 4200 cents"


ATTEMPTS: dict[str, int] = {}


async def charge(ctx: RunContext[Any], order: str) -> str:
    """Charge an order: its first attempt acts, then dies before reporting (a timeout)."""
    effect(f"charge {order} {approval_id(ctx)}")
    ATTEMPTS[order] = ATTEMPTS.get(order, 0) + 1
    if ATTEMPTS[order] == 1:
        await asyncio.sleep(3)  # past its start-to-close timeout: Temporal tries again
    return f"charged {order}"


async def ship(ctx: RunContext[Any], order: str) -> str:
    """Ship an order; idempotent by its approval id: a retry finds the shipment made."""
    key = approval_id(ctx)
    if f"ship {order} {key}" not in effects():
        effect(f"ship {order} {key}")
    ATTEMPTS[f"ship {order}"] = ATTEMPTS.get(f"ship {order}", 0) + 1
    if ATTEMPTS[f"ship {order}"] == 1:
        raise ConnectionError("the carrier hung up after taking the order")
    return f"shipped {order}"


QUICK = ActivityConfig(
    start_to_close_timeout=timedelta(seconds=1),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200)),
)
toolset = GatedToolset(id="shop")
toolset.add_function(refund, requires_approval=True)
toolset.add_function(send_email, requires_approval=True)
toolset.add_function(delete_account)
toolset.add_function(lookup)
toolset.add_function(charge, requires_approval=True, metadata={"temporal": QUICK})
toolset.add_function(
    ship,
    requires_approval=True,
    metadata={"hitl": {"idempotent": True}, "temporal": {"retry_policy": QUICK["retry_policy"]}},
)

agent = Agent(
    fake_model(),
    name="shop",
    instructions="You run a shop's back office.",
    toolsets=[toolset],
    capabilities=[
        TemporalDurability(),
        GateApprovals(
            {
                "refund": ToolRules(risk=70),
                "send_email": ToolRules(timeout=timedelta(seconds=2), modifiable=False),
            }
        ),
    ],
)


@workflow.defn
class ShopWorkflow:
    """Runs the shop agent on one prompt; approvals through the gate (its handlers)."""

    __pydantic_ai_agents__: ClassVar = [agent]

    @workflow.init
    def __init__(self, prompt: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await agent.run(prompt)
        return result.output


@workflow.defn
class ForgotTheGateWorkflow:
    """The shop agent in a workflow that made no gate: it fails, saying so."""

    __pydantic_ai_agents__: ClassVar = [agent]

    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await agent.run(prompt)
        return result.output


# The deprecated wrapper (Pydantic AI before TemporalDurability): the same capability works.
legacy_toolset = GatedToolset(id="legacy-shop")
legacy_toolset.add_function(refund, requires_approval=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # PydanticAIDeprecationWarning: this is the point
    legacy = TemporalAgent(
        Agent(
            fake_model(),
            name="legacy-shop",
            toolsets=[legacy_toolset],
            capabilities=[GateApprovals()],
        )
    )


@workflow.defn
class LegacyShopWorkflow:
    """The shop agent through the deprecated `TemporalAgent` wrapper."""

    __pydantic_ai_agents__: ClassVar = [legacy]

    @workflow.init
    def __init__(self, prompt: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await legacy.run(prompt)
        return result.output


# The worker's built-in `delete_files` (HitlPlugin(tools=["builtin"])), on the workspace
# the run was started on (the agent's deps).
files_toolset = HitlToolset(
    ["delete_files"], options=lambda ctx: ToolCallOptions(workspace=ctx.deps)
)
files_agent = Agent(
    fake_model(),
    name="files",
    deps_type=str,
    instructions="You keep a workspace tidy.",
    toolsets=[files_toolset],
    capabilities=[TemporalDurability()],
)


@workflow.defn
class FilesWorkflow:
    """Runs the files agent on one prompt and workspace; the gate asks about deletions."""

    __pydantic_ai_agents__: ClassVar = [files_agent]

    @workflow.init
    def __init__(self, prompt: str, workspace: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, prompt: str, workspace: str) -> str:
        result = await files_agent.run(prompt, deps=workspace)
        return result.output


WORKFLOWS = [ShopWorkflow, LegacyShopWorkflow, ForgotTheGateWorkflow, FilesWorkflow]


def plugins() -> list[Any]:
    return [PydanticAIPlugin(), HitlPlugin()]


async def _serve(task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"], plugins=plugins())
    async with Worker(client, task_queue=task_queue, workflows=WORKFLOWS):
        print("worker.started", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1]))
