"""Start the support agent and decide its approvals here:
`python -m examples.openai_agents.starter "My order A-1001 arrived damaged"`.

Each approval is shown as the gate recorded it (tool, arguments, preview, the model's
reasoning) and decided at the prompt: y approves, n rejects (you give the reason the
model reads), e edits the arguments. `--yes` approves everything. The same approvals are
listed by `hitl pending` and decided by `hitl approve/reject/modify` from anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from temporalio.client import Client, WorkflowHandle

from examples.openai_agents.workflow import SupportAgentWorkflow, SupportAnswer, SupportRequest
from hitl import contract
from hitl.entry import exit_now
from hitl.models import ApprovalRecord
from hitl.text import visible, visible_json

REQUEST = "My order A-1001 arrived damaged. Please refund it and let me know."


async def start(
    client: Client, task_queue: str, request: str
) -> WorkflowHandle[Any, SupportAnswer]:
    return await client.start_workflow(
        SupportAgentWorkflow.run,
        SupportRequest(request=request, requested_by=os.environ.get("USER", "")),
        id=f"support-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


def show(record: ApprovalRecord, say: Callable[[str], None]) -> None:
    say(f"\nApproval {record.id}: {visible(record.action_json.tool)} (risk {record.risk})")
    if record.preview is not None:
        say(f"  preview:   {visible(record.preview.summary)}")
        for warning in record.preview.warnings:
            say(f"  warning:   {visible(warning)}")
    say(f"  arguments: {visible_json(record.action_json.args)}")
    if record.context is not None and record.context.reasoning:
        say(f"  reasoning: {visible(record.context.reasoning)}")


async def decide_here(
    handle: WorkflowHandle[Any, SupportAnswer],
    answer: Callable[[str], str],
    say: Callable[[str], None],
) -> SupportAnswer:
    """Show each new approval and send the decision typed for it, until the run ends."""
    seen: set[str] = set()
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        records = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
        for record in records:
            if record.status.value != "pending" or record.id in seen:
                continue
            seen.add(record.id)
            show(record, say)
            choice = answer("Approve? [y/n/e(dit)]: ").strip().lower()
            body: dict[str, Any] = {"approval_id": record.id, "reviewer": "you"}
            if choice.startswith("e"):
                body["args"] = json.loads(answer("New arguments (JSON): "))
                await handle.signal(contract.SIGNAL_MODIFY, body)
            elif choice.startswith("y"):
                await handle.signal(contract.SIGNAL_APPROVE, body)
            else:
                body["reason"] = answer("Reason (the model reads it): ") or "rejected"
                await handle.signal(contract.SIGNAL_REJECT, body)
        await asyncio.wait({result}, timeout=0.3)
    return result.result()


def prompt(yes: bool) -> Callable[[str], str]:
    def ask(question: str) -> str:
        if yes:
            print(question + "y (--yes)", flush=True)
            return "y"
        print(question, end="", flush=True)
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else "n"

    return ask


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("request", nargs="?", default=REQUEST)
    p.add_argument("--yes", action="store_true", help="approve every call")
    return p


async def main(argv: list[str] | None = None) -> int:
    from examples.openai_agents.worker import TASK_QUEUE, running_worker

    args = parser().parse_args(argv)
    async with running_worker(os.environ, os.environ.get("HITL_TASK_QUEUE") or TASK_QUEUE) as (
        client,
        model,
    ):
        print(f"model: {model}", flush=True)
        handle = await start(client, os.environ.get("HITL_TASK_QUEUE") or TASK_QUEUE, args.request)
        print(f"started {handle.id}: {visible(args.request)}", flush=True)
        answer = await decide_here(handle, prompt(args.yes), lambda line: print(line, flush=True))
    print(f"\nAnswer: {visible(answer.answer)}")
    for output in answer.tool_outputs:
        print(f"  tool: {visible(output)}")
    return 0


if __name__ == "__main__":
    exit_now(asyncio.run(main()))  # no interpreter finalization: sdk-python#300
