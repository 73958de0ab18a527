"""Pydantic AI on Temporal with the gate: the real framework, a real dev server, and its
OpenAI chat model against the local OpenAI-compatible server (no provider is called)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from hitl import contract
from hitl.models import ApprovalStatus
from tests import pydantic_ai_app as app
from tests.fake_openai import FakeOpenAI, completion, tool_messages
from tests.helpers import approvals, decision, wait_decisions, wait_pending


def scripted(*calls: tuple[str, dict[str, Any]], content: str = "On it.") -> Any:
    """A model that proposes `calls` in one step, then reports what the tools answered."""

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        results = tool_messages(body)
        if not results:
            return 200, completion(content, *calls)
        return 200, completion("Final: " + " | ".join(str(r["content"]) for r in results))

    return respond


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv(app.EFFECTS_ENV, str(path))
    return path


@pytest.fixture
async def pai_client(client: Client) -> Client:
    """The session's server, through a client with both plugins (either order works)."""
    config = client.config()
    config["plugins"] = app.plugins()
    return Client(**config)


@pytest.fixture
async def pai_worker(pai_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with Worker(pai_client, task_queue=task_queue, workflows=app.WORKFLOWS) as running:
        yield running


def serve(responder: Any, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake = FakeOpenAI(responder)
    monkeypatch.setenv(app.PORT_ENV, str(fake.server.server_address[1]))
    return fake


async def start(client: Client, task_queue: str, prompt: str) -> WorkflowHandle[Any, str]:
    return await client.start_workflow(
        app.ShopWorkflow.run,
        prompt,
        id=f"pai-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
    )


pytestmark = pytest.mark.usefixtures("effects", "pai_worker")


async def test_an_approved_call_runs_in_the_same_agent_run(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scripted(("refund", {"order": "A1", "amount": 500}), content="The parcel arrived broken.")
    with serve(model, monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Refund order A1, it arrived broken")
        [record] = await wait_pending(handle)
        assert record.action_json.tool == "refund"
        assert record.action_json.args == {"order": "A1", "amount": 500}
        assert record.context.original_request == "Refund order A1, it arrived broken"
        assert record.context.reasoning == "The parcel arrived broken."
        assert record.risk == 70
        assert record.args_schema is not None and "amount" in record.args_schema["properties"]
        assert app.effects() == []
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        output = await handle.result()
    assert output == "Final: refunded 500 on A1"
    assert app.effects() == [f"refund A1 500 {record.id}"]
    assert len(fake.requests) == 2
    [done] = await approvals(handle)
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "alice"


async def test_a_rejection_reason_reaches_the_model(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("refund", {"order": "A2", "amount": 99_000})), monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Refund A2 in full")
        [record] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_REJECT, decision(record.id, reason="over the refund limit")
        )
        output = await handle.result()
    assert app.effects() == []
    [answer] = tool_messages(fake.requests[-1])
    assert "over the refund limit" in answer["content"]
    assert "over the refund limit" in output


async def test_a_modification_is_checked_then_runs_with_the_new_arguments(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("refund", {"order": "A3", "amount": 9000})), monkeypatch):
        handle = await start(pai_client, task_queue, "Refund A3")
        [record] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(record.id, args={"order": "A3", "amount": "lots"})
        )
        [refused] = await wait_decisions(handle, record.id, 1)
        assert refused.outcome == "refused" and "amount" in (refused.refusal or "")
        [still] = await wait_pending(handle)
        assert still.id == record.id
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(record.id, args={"order": "A3", "amount": 4500})
        )
        output = await handle.result()
    assert app.effects() == [f"refund A3 4500 {record.id}"]
    assert output == "Final: refunded 4500 on A3"
    [done] = await approvals(handle)
    assert done.status is ApprovalStatus.MODIFIED


async def test_the_gate_times_out_and_the_model_is_told(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("send_email", {"to": "ceo@example.com", "subject": "hi"})), monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Email the CEO")
        output = await asyncio.wait_for(handle.result(), 30)
    [record] = await approvals(handle)
    assert record.status is ApprovalStatus.REJECTED and record.reviewer == "system:timeout"
    assert app.effects() == []
    assert "No reviewer decided in time" in tool_messages(fake.requests[-1])[0]["content"]
    assert "No reviewer decided in time" in output
