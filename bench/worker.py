"""A worker process for the benchmarks: the project's (`build_worker`) or the baseline's.

A probe interceptor appends "<key> <time>" to a file when the approved action's
activity starts (`run_tool` keyed by approval id, `baseline_action` by its key).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from bench.baseline import BaselineApproval, BaselineLoop, baseline_action, baseline_step
from hitl import contract
from hitl.config import connect, load_settings
from hitl.entry import exit_now
from hitl.telemetry import install
from worker import build_worker


class Probe(Interceptor):
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ProbeInbound(next, self.out)


class _ProbeInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, out: Any) -> None:
        super().__init__(next)
        self.out = out

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        kind = activity.info().activity_type
        if kind == contract.ACTIVITY_RUN_TOOL:
            self.out.write(f"{input.args[0].idempotency_key} {time.time():.6f}\n")
        elif kind == "baseline_action":
            self.out.write(f"{input.args[0]} {time.time():.6f}\n")
        return await self.next.execute_activity(input)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("project", "baseline"), required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--probe", required=True)
    parser.add_argument("--ready", required=True, help="file created once the worker polls")
    args = parser.parse_args()
    probe = Probe(args.probe)
    telemetry = None
    if args.kind == "project":
        telemetry = install("hitl-bench-worker")  # on only where the environment says so
        client = await connect(load_settings(), telemetry)
        worker = build_worker(client, args.task_queue, interceptors=[probe])
    else:
        # The obvious way: default data converter, default worker settings.
        client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
        worker = Worker(
            client,
            task_queue=args.task_queue,
            workflows=[BaselineApproval, BaselineLoop],
            activities=[baseline_action, baseline_step],
            interceptors=[probe],
        )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with AsyncExitStack() as stack:
        if telemetry is not None:
            await stack.enter_async_context(telemetry.running())
        await stack.enter_async_context(worker)
        Path(args.ready).touch()
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
    exit_now(0)
