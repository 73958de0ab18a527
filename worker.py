"""Run a worker: `python worker.py` (configuration from the environment, see README).

`python worker.py --tools-only --task-queue hitl-commands` serves only the tools'
activities: run it, with no secrets in its environment, for the tools a run sends to
that queue (`starter.py --tool-queue run_command=hitl-commands`, docs/secrets.md).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import ALL_ACTIVITIES, TOOL_ACTIVITIES
from hitl.config import connect, load_settings
from hitl.entry import exit_now
from hitl.logs import configure_logging
from hitl.visibility import ensure_search_attributes
from workflows import ALL_WORKFLOWS

log = structlog.get_logger("hitl.worker")


def build_worker(client: Client, task_queue: str, **options: Any) -> Worker:
    """The project's worker: every workflow and activity, on one task queue.

    Tuned by `make bench` (docs/benchmarks.md): the sandbox still enforces determinism,
    but passes every module through instead of re-importing them for each run. That cut
    the memory each cached run costs (154 -> 132 MB with 300 paused runs) and bettered
    decision latency at p99, at about 1.5 ms more at p50 (the proxies that guard
    passed-through modules).
    """
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
    options.setdefault(
        "workflow_runner",
        SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )
    options.setdefault("workflows", ALL_WORKFLOWS)
    options.setdefault("activities", ALL_ACTIVITIES)
    return Worker(client, task_queue=task_queue, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-queue", help="the task queue to poll (default: HITL_TASK_QUEUE)")
    parser.add_argument(
        "--tools-only",
        action="store_true",
        help="serve only the tools' activities (no workflows, no model): a worker for "
        "commands, with no secrets in its environment",
    )
    return parser


async def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging()
    settings = load_settings()
    task_queue = args.task_queue or settings.task_queue
    client = await connect(settings)
    if args.tools_only:
        worker = build_worker(client, task_queue, workflows=[], activities=TOOL_ACTIVITIES)
    else:
        added = await ensure_search_attributes(client)
        if added:
            log.info("search_attributes.registered", names=added)
        worker = build_worker(client, task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker.started",
        address=settings.address,
        namespace=settings.namespace,
        task_queue=task_queue,
        tools_only=args.tools_only,
    )
    async with worker:
        await stop.wait()
    log.info("worker.stopped")


if __name__ == "__main__":
    asyncio.run(main())
    exit_now(0)
