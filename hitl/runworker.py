"""Running a worker from the command line: `python worker.py` and `hitl worker`."""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog

from hitl.config import ConfigError, connect, load_settings
from hitl.logs import configure_logging
from hitl.plugin import build_worker
from hitl.tools import TOOLS_ENV, ToolRegistrationError, load_tools, modules_from

log = structlog.get_logger("hitl.worker")


def add_worker_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--task-queue", help="the task queue to poll (default: HITL_TASK_QUEUE)")
    parser.add_argument(
        "--tools",
        metavar="MODULES",
        help=f"tool modules, comma-separated ('builtin' = the built-in toolkits); default: "
        f"{TOOLS_ENV}, else the built-in toolkits",
    )
    parser.add_argument(
        "--tools-only",
        action="store_true",
        help="serve only the tools' activities (no workflows, no model): a worker for "
        "commands, with no secrets in its environment",
    )
    return parser


def build_worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker.py", description="Run a worker for agent runs and their tools."
    )
    return add_worker_arguments(parser)


async def run_worker(args: argparse.Namespace) -> int:
    """Connect, start the worker, run until SIGINT or SIGTERM; 2 when it can't start."""
    configure_logging()
    try:
        settings = load_settings()
    except ConfigError as error:
        log.error("worker.config_refused", error=str(error))
        print(f"worker: {error}", flush=True)
        return 2
    task_queue = args.task_queue or settings.task_queue
    try:
        registry = load_tools(modules_from(args.tools))
    except ToolRegistrationError as error:
        log.error("worker.tools_refused", error=str(error))
        print(f"worker: {error}", flush=True)
        return 2
    try:
        client = await connect(settings)
    except RuntimeError as error:
        log.error("worker.no_server", address=settings.address, error=str(error))
        print(
            f"worker: cannot reach the Temporal server at {settings.address} ({error}); start "
            "it with `make server`, or set TEMPORAL_ADDRESS",
            flush=True,
        )
        return 2
    worker = build_worker(client, task_queue, tools=registry, tools_only=args.tools_only)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        log.info(
            "worker.started",
            address=settings.address,
            namespace=settings.namespace,
            task_queue=task_queue,
            tools=registry.names,
            tools_only=args.tools_only,
        )
        await stop.wait()
    log.info("worker.stopped")
    return 0
