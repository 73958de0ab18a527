"""The example's worker: both plugins, the support workflow (its activities come with it).

TEMPORAL_ADDRESS=127.0.0.1:7233 python -m examples.pydantic_ai.worker
"""

from __future__ import annotations

import asyncio
import os

from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from temporalio.client import Client
from temporalio.worker import Worker

from examples.pydantic_ai.workflow import TASK_QUEUE, SupportWorkflow
from hitl.plugin import HitlPlugin


async def main() -> None:
    client = await Client.connect(
        os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233"),
        plugins=[PydanticAIPlugin(), HitlPlugin()],
    )
    queue = os.environ.get("HITL_TASK_QUEUE", TASK_QUEUE)
    async with Worker(client, task_queue=queue, workflows=[SupportWorkflow]):
        print(f"worker.started on {queue}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
