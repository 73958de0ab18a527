"""The gate's added latency per approved Pydantic AI call, against Pydantic AI's own path.

Both workflows run the same agent (a local `FunctionModel`: no LLM, no network) whose
first step calls one `requires_approval=True` tool. One decides through the gate
(`GateApprovals`, the tool in a `GatedToolset`, a decision sent as the `approve` signal,
as a reviewer's tool sends it); the other is Pydantic AI's own in-run path, a
`HandleDeferredToolCalls` handler that waits for a plain signal. Measured: decision sent
to the tool starting, one run at a time, on an in-process worker.

    python -m bench.pydantic_ai    # on its own dev server; bench/run.py calls measure(client)
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any, ClassVar

from pydantic_ai import Agent, FunctionToolset, RunContext
from pydantic_ai.capabilities import HandleDeferredToolCalls
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin, TemporalDurability
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from hitl import contract
from hitl.gate import ApprovalGate
from hitl.integrations.pydantic_ai import GateApprovals, GatedToolset
from hitl.models import ApprovalRecord
from hitl.plugin import HitlPlugin

STARTED: dict[str, float] = {}
"""When each run's tool started (time.time()), by the key in its prompt; in-process."""


def _model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if any(
        isinstance(m, ModelRequest) and m.parts[-1].part_kind == "tool-return" for m in messages
    ):
        return ModelResponse(parts=[TextPart("done")])
    first = messages[0]
    assert isinstance(first, ModelRequest)
    key = str(getattr(first.parts[-1], "content", ""))
    return ModelResponse(parts=[ToolCallPart("act", {"key": key}, tool_call_id="c1")])


async def act(ctx: RunContext[Any], key: str) -> str:
    """The approved action: notes when it started."""
    STARTED[key] = time.time()
    return "acted"


gated_tools = GatedToolset(id="bench-gated")
gated_tools.add_function(act, requires_approval=True)
plain_tools: FunctionToolset[Any] = FunctionToolset(id="bench-plain")
plain_tools.add_function(act, requires_approval=True)
unchecked_tools: FunctionToolset[Any] = FunctionToolset(id="bench-unchecked")
unchecked_tools.add_function(act, requires_approval=True)

gated = Agent(
    FunctionModel(_model),
    name="bench-gated",
    toolsets=[gated_tools],
    capabilities=[TemporalDurability(), GateApprovals()],
)

unchecked = Agent(
    FunctionModel(_model),
    name="bench-unchecked",
    toolsets=[unchecked_tools],
    capabilities=[TemporalDurability(), GateApprovals()],
)
"""The gate without `GatedToolset`'s check in the activity: what that check costs."""


async def _wait_for_signal(
    ctx: RunContext[Any], requests: DeferredToolRequests
) -> DeferredToolResults:
    run = workflow.instance()
    run.pending = [call.tool_call_id for call in requests.approvals]
    await workflow.wait_condition(lambda: run.approved)
    return requests.build_results(approvals={c: ToolApproved() for c in run.pending})


plain = Agent(
    FunctionModel(_model),
    name="bench-plain",
    toolsets=[plain_tools],
    capabilities=[TemporalDurability(), HandleDeferredToolCalls(handler=_wait_for_signal)],
)


@workflow.defn
class GatedBench:
    __pydantic_ai_agents__: ClassVar = [gated]

    @workflow.init
    def __init__(self, key: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, key: str) -> str:
        return (await gated.run(key)).output


@workflow.defn
class UncheckedBench:
    __pydantic_ai_agents__: ClassVar = [unchecked]

    @workflow.init
    def __init__(self, key: str) -> None:
        self.gate = ApprovalGate()

    @workflow.run
    async def run(self, key: str) -> str:
        return (await unchecked.run(key)).output


@workflow.defn
class PlainBench:
    """Pydantic AI's own approval path: the handler waits for the `approve` signal."""

    __pydantic_ai_agents__: ClassVar = [plain]

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def waiting(self) -> bool:
        return bool(self.pending)

    @workflow.run
    async def run(self, key: str) -> str:
        return (await plain.run(key)).output


async def _until(check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.01)
    raise TimeoutError("the run never paused for approval")


async def _gated_once(client: Client, queue: str, checked: bool = True) -> float:
    key = uuid.uuid4().hex
    handle: WorkflowHandle[Any, str] = await client.start_workflow(
        GatedBench.run if checked else UncheckedBench.run,
        key,
        id=f"bench-pai-gate-{key[:10]}",
        task_queue=queue,
    )

    async def pending() -> str | None:
        records = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
        return next((r.id for r in records if r.status.value == "pending"), None)

    approval_id = await _until(pending)
    sent = time.time()
    await handle.signal(contract.SIGNAL_APPROVE, {"approval_id": approval_id, "reviewer": "bench"})
    await handle.result()
    return (STARTED.pop(key) - sent) * 1000


async def _plain_once(client: Client, queue: str) -> float:
    key = uuid.uuid4().hex
    handle: WorkflowHandle[Any, str] = await client.start_workflow(
        PlainBench.run, key, id=f"bench-pai-plain-{key[:10]}", task_queue=queue
    )

    async def waiting() -> bool:
        return bool(await handle.query(PlainBench.waiting))

    await _until(waiting)
    sent = time.time()
    await handle.signal(PlainBench.approve)
    await handle.result()
    return (STARTED.pop(key) - sent) * 1000


async def measure(client: Client, count: int = 20) -> dict[str, Any]:
    """Decision to tool start, in ms, through the gate and through Pydantic AI's own path
    with a plain signal (`count` runs each, one at a time, after one warm-up each)."""
    config = client.config()
    config["plugins"] = [PydanticAIPlugin(), HitlPlugin()]
    ours = Client(**config)
    queue = f"bench-pai-{uuid.uuid4().hex[:8]}"
    async with Worker(ours, task_queue=queue, workflows=[GatedBench, UncheckedBench, PlainBench]):
        await _gated_once(ours, queue)
        await _gated_once(ours, queue, checked=False)
        await _plain_once(ours, queue)
        gate = [await _gated_once(ours, queue) for _ in range(count)]
        unchecked = [await _gated_once(ours, queue, checked=False) for _ in range(count)]
        base = [await _plain_once(ours, queue) for _ in range(count)]
    gate_p50, base_p50 = statistics.median(gate), statistics.median(base)
    return {
        "count": count,
        "gate_p50_ms": round(gate_p50, 2),
        "gate_p95_ms": round(_p95(gate), 2),
        "gate_without_activity_check_p50_ms": round(statistics.median(unchecked), 2),
        "plain_signal_p50_ms": round(base_p50, 2),
        "plain_signal_p95_ms": round(_p95(base), 2),
        "ratio_p50": round(gate_p50 / base_p50, 2) if base_p50 > 0 else None,
    }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def _main() -> None:
    import tempfile
    from pathlib import Path

    from hitl.devserver import DevServer, free_port
    from hitl.visibility import ensure_search_attributes

    with tempfile.TemporaryDirectory() as scratch:
        server = DevServer(Path(scratch) / "temporal.db", port=free_port(), headless=True)
        with server:
            for _ in range(100):
                try:
                    client = await Client.connect(server.address)
                    break
                except RuntimeError:
                    await asyncio.sleep(0.2)
            await ensure_search_attributes(client)
            print(await measure(client))


if __name__ == "__main__":
    asyncio.run(_main())
