"""The OpenAI Agents SDK behind the gate: the real SDK and `temporalio-openai-agents`, a
real dev server, the model played by the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from agents import Model, ModelProvider, OpenAIChatCompletionsModel, set_tracing_disabled
from openai import AsyncOpenAI
from temporalio.client import Client, WorkflowHandle
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import Worker

from examples.openai_agents.workflow import SupportAgentWorkflow, SupportAnswer, SupportRequest
from hitl import contract
from hitl.plugin import HitlPlugin
from tests.fake_openai import FakeOpenAI, completion, tool_messages
from tests.helpers import approvals, decision, wait_decisions, wait_pending

set_tracing_disabled(True)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # No key: the SDK exports no traces, nothing leaves this machine.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")


async def wait_status(handle: WorkflowHandle, approval_id: str, status: str, timeout: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = next(r for r in await approvals(handle) if r.id == approval_id)
        if record.status.value == status:
            return record
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{approval_id} is {record.status.value}, not {status}")
        await asyncio.sleep(0.05)


class LocalProvider(ModelProvider):
    def __init__(self, base_url: str) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key="sk-test-local", max_retries=0)

    def get_model(self, model_name: str | None) -> Model:
        return OpenAIChatCompletionsModel(model_name or "fake-gpt-1", openai_client=self.client)


def agents_plugin(fake: FakeOpenAI) -> OpenAIAgentsPlugin:
    return OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=30)),
        model_provider=LocalProvider(fake.base_url),
    )


def agents_client(client: Client, fake: FakeOpenAI, hitl_first: bool = False) -> Client:
    plugins = [agents_plugin(fake), HitlPlugin()]
    return Client(
        client.service_client,
        namespace=client.namespace,
        plugins=list(reversed(plugins)) if hitl_first else plugins,
    )


@asynccontextmanager
async def agent_worker(
    client: Client, fake: FakeOpenAI, task_queue: str, activities: list[Any] | None = None
) -> AsyncIterator[Client]:
    from examples.openai_agents.activities import send_email

    own = agents_client(client, fake)
    async with Worker(
        own,
        task_queue=task_queue,
        workflows=[SupportAgentWorkflow],
        activities=activities if activities is not None else [send_email],
    ):
        yield own


def scripted(*turns: Callable[[dict[str, Any]], dict[str, Any]] | dict[str, Any]):
    """Answers the n-th model request with the n-th turn (a completion, or a function
    of the request)."""
    count = [0]

    def responder(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        turn = turns[min(count[0], len(turns) - 1)]
        count[0] += 1
        return 200, turn(body) if callable(turn) else turn

    return responder


def final(body: dict[str, Any]) -> dict[str, Any]:
    return completion("Done: " + " | ".join(m["content"] for m in tool_messages(body)))


async def start(client: Client, task_queue: str, request: str = "refund A1 and B2", **fields: Any) -> WorkflowHandle[Any, SupportAnswer]:
    return await client.start_workflow(
        SupportAgentWorkflow.run,
        SupportRequest(request=request, **fields),
        id=f"oai-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=SupportAnswer,
    )


TWO_REFUNDS = completion(
    "Refunding both orders.",
    ("refund", {"order_id": "A1", "amount_eur": 50}),
    ("refund", {"order_id": "B2", "amount_eur": 70}),
)


async def test_two_calls_of_a_turn_are_decided_side_by_side_and_the_reason_reaches_the_model(
    client: Client, task_queue: str
) -> None:
    with FakeOpenAI(scripted(TWO_REFUNDS, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue)
            first, second = sorted(await wait_pending(handle, 2), key=lambda r: r.action_json.args["order_id"])
            assert first.context.original_request == "refund A1 and B2"
            assert first.context.reasoning == "Refunding both orders."
            assert first.preview.summary == "refund 50 EUR on order A1"
            assert first.risk == 70 and first.args_schema is not None
            # The second is decided first; each stands alone.
            await handle.signal(contract.SIGNAL_REJECT, decision(second.id, "bob", reason="B2 was never paid"))
            await wait_status(handle, second.id, "rejected")
            assert [r.status.value for r in await approvals(handle)].count("pending") == 1
            await handle.signal(contract.SIGNAL_APPROVE, decision(first.id))
            answer = await asyncio.wait_for(handle.result(), 30)
    tools = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert tools["call_0"] == "refunded 50 EUR on order A1"
    assert tools["call_1"] == "Rejected by the reviewer: B2 was never paid"
    assert answer.answer.startswith("Done: ")
    assert sorted(answer.approvals) == sorted([f"{first.id} approved", f"{second.id} rejected"])
