"""Start one support request and review its approvals here, as `hitl approve` would.

    TEMPORAL_ADDRESS=127.0.0.1:7233 python -m examples.pydantic_ai.starter "Order A-1001 ..."

Each pending approval is shown (tool, arguments, the model's words, risk), then
`Approve? [y/n/e(dit)]`; answers may be piped. Any reviewer's tool decides the same
approvals: `hitl pending`, `hitl approve ID`, the API or the inbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client, WorkflowHandle

from examples.pydantic_ai.workflow import TASK_QUEUE, SupportWorkflow
from hitl import contract
from hitl.entry import exit_now
from hitl.models import (
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    ModifyDecision,
    RejectDecision,
)
from hitl.plugin import HitlPlugin
from hitl.reviews import Reviews
from hitl.text import visible, visible_json

REQUEST = "Customer 1042 says order A-1001 arrived broken. Sort it out."


def _ask(prompt: str) -> str:
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    if not line:
        print("(no answer: rejecting)")
        return "n"
    return line.strip().lower()


def _show(record: ApprovalRecord) -> None:
    print(f"\n--- approval {record.id}: {visible(record.action_json.tool)} (risk {record.risk})")
    print(f"    arguments: {visible_json(record.action_json.args)}")
    if record.context.reasoning:
        print(f"    the model said: {visible(record.context.reasoning, multiline=True)}")
    print(f"    (from another terminal: hitl approve {record.id} / hitl reject {record.id})")


async def _review(reviews: Reviews, handle: WorkflowHandle[SupportWorkflow, str]) -> None:
    """Answer each approval as it comes, until the run ends."""
    seen: set[str] = set()
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        records = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
        for record in records:
            if record.status is not ApprovalStatus.PENDING or record.id in seen:
                continue
            seen.add(record.id)
            _show(record)
            answer = _ask("Approve? [y/n/e(dit)]: ")
            decision: ApproveDecision | RejectDecision | ModifyDecision
            if answer.startswith("y"):
                decision = ApproveDecision(approval_id=record.id, reviewer="you")
            elif answer.startswith("e"):
                args = json.loads(_ask("new arguments (JSON): ") or "{}")
                decision = ModifyDecision(approval_id=record.id, reviewer="you", args=args)
            else:
                reason = _ask("why? ") or "rejected by the reviewer"
                decision = RejectDecision(approval_id=record.id, reviewer="you", reason=reason)
            outcome = await reviews.decide(decision, workflow_id=handle.id)
            entry = outcome.entry
            said = entry.outcome if entry else (outcome.rejected or "sent")
            print(f"    -> {said}{f': {entry.refusal}' if entry and entry.refusal else ''}")
            if entry is not None and entry.outcome == "refused":
                seen.discard(record.id)  # still pending: ask again
        await asyncio.wait({result}, timeout=0.3)


async def main(argv: list[str]) -> int:
    client = await Client.connect(
        os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        plugins=[PydanticAIPlugin(), HitlPlugin()],
    )
    request = argv[0] if argv else REQUEST
    handle = await client.start_workflow(
        SupportWorkflow.run,
        request,
        id=f"support-{uuid.uuid4().hex[:8]}",
        task_queue=os.environ.get("HITL_TASK_QUEUE", TASK_QUEUE),
    )
    print(f"Started {handle.id}: {visible(request)}")
    await _review(Reviews(client), handle)
    print(f"\nThe agent's answer: {visible(await handle.result(), multiline=True)}")
    return 0


if __name__ == "__main__":
    exit_now(asyncio.run(main(sys.argv[1:])))  # no interpreter finalization: sdk-python#300
