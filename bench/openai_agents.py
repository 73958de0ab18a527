"""The gate's added latency behind the OpenAI Agents SDK: decision → the approved tool's
activity started, through `run_gated` and a gate decision, against the SDK's own approval
path (`result.interruptions`, `RunState.approve`, `Runner.run(agent, state)`) resumed by a
plain signal. Both run the same agent, tool and offline model; only the approval differs.

`measure(client)` returns the figures (the integrator's `bench/run.py` reports them);
`python -m bench.openai_agents` prints them, on a dev server of its own.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle

with workflow.unsafe.imports_passed_through():
    from agents import Agent, Runner

    from hitl.gate import ApprovalGate
    from hitl.integrations.openai_agents import gated_activity_tool, run_gated

STARTS: dict[str, float] = {}
"""Workflow id → when its tool's activity started (monotonic; the worker is in-process)."""


@activity.defn
async def bench_tool(order_id: str) -> str:
    """Refund an order."""
    STARTS.setdefault(activity.info().workflow_id or "", time.monotonic())
    return f"refunded {order_id}"


AGENT = Agent(
    name="bench",
    instructions="Refund the order.",
    model="bench",
    tools=[gated_activity_tool(bench_tool, start_to_close_timeout=timedelta(seconds=10))],
)


@workflow.defn
class GatedBench:
    @workflow.init
    def __init__(self, request: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, request: str) -> str:
        return str((await run_gated(AGENT, request, gate=self.gate)).final_output)


@workflow.defn
class PlainBench:
    """The SDK's approval path on its own: wait for a plain `approve` signal."""

    def __init__(self) -> None:
        self.approved = False
        self.waiting = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def waiting_for_approval(self) -> bool:
        return self.waiting

    @workflow.run
    async def run(self, request: str) -> str:
        result = await Runner.run(AGENT, request)
        while result.interruptions:
            state = result.to_state()
            self.waiting = True
            await workflow.wait_condition(lambda: self.approved)
            self.waiting, self.approved = False, False
            for item in state.get_interruptions():
                state.approve(item)
            result = await Runner.run(AGENT, state)
        return str(result.final_output)


def _script(body: dict[str, Any]) -> dict[str, Any]:
    said = [m for m in body.get("messages", []) if m.get("role") == "tool"]
    message: dict[str, Any] = {"role": "assistant", "content": "done" if said else "refunding"}
    if not said:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": "bench_tool", "arguments": json.dumps({"order_id": "A1"})},
            }
        ]
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


async def _until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("the run never paused for approval")
        await asyncio.sleep(0.005)


async def _one(client: Client, task_queue: str, gated: bool) -> float:
    from hitl import contract
    from hitl.models import ApprovalRecord

    workflow_id = f"bench-oai-{'gated' if gated else 'plain'}-{uuid.uuid4().hex[:8]}"
    handle: WorkflowHandle[Any, str] = await client.start_workflow(
        GatedBench.run if gated else PlainBench.run,
        "refund A1",
        id=workflow_id,
        task_queue=task_queue,
    )
    pending: list[ApprovalRecord] = []

    async def paused() -> bool:
        if not gated:
            return bool(await handle.query(PlainBench.waiting_for_approval))
        records = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
        pending[:] = [r for r in records if r.status.value == "pending"]
        return bool(pending)

    await _until(paused)
    sent = time.monotonic()
    if gated:
        await handle.signal(
            contract.SIGNAL_APPROVE, {"approval_id": pending[0].id, "reviewer": "bench"}
        )
    else:
        await handle.signal(PlainBench.approve)

    async def started() -> bool:
        return workflow_id in STARTS

    await _until(started)
    await handle.result()
    return (STARTS.pop(workflow_id) - sent) * 1000


async def measure(client: Client, runs: int = 20) -> dict[str, float]:
    """Decision → tool start, p50 in ms, gated and plain, and their ratio (runs one after
    another, alternating, on a worker in this process)."""
    from agents import set_tracing_disabled
    from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
    from temporalio.worker import Worker

    from examples.openai_agents.scripted import ScriptedServer
    from examples.openai_agents.worker import ChatCompletions
    from hitl.plugin import HitlPlugin

    set_tracing_disabled(True)
    with ScriptedServer(_script) as server:
        own = Client(
            client.service_client,
            namespace=client.namespace,
            plugins=[
                OpenAIAgentsPlugin(
                    model_params=ModelActivityParameters(
                        start_to_close_timeout=timedelta(seconds=30)
                    ),
                    model_provider=ChatCompletions(server.base_url, "offline"),
                ),
                HitlPlugin(register_search_attributes=False),
            ],
        )
        task_queue = f"bench-oai-{uuid.uuid4().hex[:8]}"
        async with Worker(
            own,
            task_queue=task_queue,
            workflows=[GatedBench, PlainBench],
            activities=[bench_tool],
        ):
            await _one(own, task_queue, True)  # warm-up: caches, connections
            await _one(own, task_queue, False)
            gated, plain = [], []
            for _ in range(runs):
                gated.append(await _one(own, task_queue, True))
                plain.append(await _one(own, task_queue, False))
    gated_p50, plain_p50 = statistics.median(gated), statistics.median(plain)
    return {
        "runs": float(runs),
        "gated_decision_to_tool_start_p50_ms": gated_p50,
        "plain_signal_to_tool_start_p50_ms": plain_p50,
        "ratio": gated_p50 / plain_p50 if plain_p50 else float("inf"),
    }


async def _main() -> None:
    from hitl.devserver import DevServer, free_port

    with tempfile.TemporaryDirectory(prefix="hitl-bench-oai-") as state:
        with DevServer(Path(state) / "temporal.db", port=free_port(), headless=True) as server:
            client = None
            for _ in range(100):
                try:
                    client = await Client.connect(server.address)
                    break
                except RuntimeError:
                    await asyncio.sleep(0.2)
            assert client is not None, "the dev server never answered"
            print(json.dumps(await measure(client), indent=2))


if __name__ == "__main__":
    asyncio.run(_main())
