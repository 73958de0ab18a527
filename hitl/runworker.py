"""Running a worker from the command line: `hitl worker` and the reference agent's
`python worker.py`.

The library knows no workflow of its own: a worker serves the workflows (and their
activities) of the modules named by `--workflows A,B` or `HITL_WORKFLOWS`, the way tools
come from `--tools`. Such a module lists `WORKFLOWS` (workflow classes) and/or
`ACTIVITIES` (activity functions); `python worker.py` names the reference agent's
(`workflows,activities`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog

from hitl.config import ConfigError, connect, load_settings
from hitl.logs import configure_logging
from hitl.plugin import build_worker
from hitl.rules import RulesError, load_rules
from hitl.secrets import redact_text
from hitl.telemetry import Telemetry, TelemetryConfigError, install
from hitl.text import clip, visible
from hitl.tools import (
    TOOLS_ENV,
    ToolRegistrationError,
    load_previewers,
    load_tools,
    modules_from,
)

log = structlog.get_logger("hitl.worker")

WORKFLOWS_ENV = "HITL_WORKFLOWS"
PREVIEWERS_ENV = "HITL_PREVIEWERS"


class WorkflowModuleError(Exception):
    """A module named by --workflows / HITL_WORKFLOWS can't be served; says why."""


def workflow_modules(
    text: str | None, default: str | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Modules from `--workflows A,B`, else HITL_WORKFLOWS, else `default`."""
    value = text or (os.environ if environ is None else environ).get(WORKFLOWS_ENV) or default
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def load_workflows(modules: Sequence[str]) -> tuple[list[type], list[Callable[..., Any]]]:
    """The `WORKFLOWS` and `ACTIVITIES` the modules list, in order."""
    workflows: list[type] = []
    activities: list[Callable[..., Any]] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise WorkflowModuleError(
                f"workflow module {visible(name)!r} could not be imported ({_said(error)}); "
                f"check {WORKFLOWS_ENV} / --workflows, and that the worker's Python finds it "
                "(run it with PYTHONPATH set to the folder that holds the module's package)"
            ) from None
        except Exception as error:  # the module's own code raised: one sentence, redacted
            raise WorkflowModuleError(
                f"workflow module {visible(name)!r} raised {type(error).__name__} while it was "
                f"imported: {_said(error)}"
            ) from None
        found_workflows = getattr(module, "WORKFLOWS", None)
        found_activities = getattr(module, "ACTIVITIES", None)
        if found_workflows is None and found_activities is None:
            raise WorkflowModuleError(
                f"module {visible(name)!r} lists no WORKFLOWS (workflow classes) or ACTIVITIES "
                "(activity functions) for a worker to serve"
            )
        workflows += [item for item in found_workflows or () if item not in workflows]
        activities += [item for item in found_activities or () if item not in activities]
    return workflows, activities


def _said(error: BaseException) -> str:
    """What an exception says, safe to print: secrets redacted, escaped, one short line."""
    return clip(visible(redact_text(str(error))), 300)


def add_worker_arguments(
    parser: argparse.ArgumentParser, default_workflows: str | None = None
) -> argparse.ArgumentParser:
    """The worker's options; `default_workflows`: the modules served when neither
    --workflows nor HITL_WORKFLOWS names any (none: the gate's and tools' activities)."""
    parser.set_defaults(default_workflows=default_workflows)
    parser.add_argument("--task-queue", help="the task queue to poll (default: HITL_TASK_QUEUE)")
    parser.add_argument(
        "--workflows",
        metavar="MODULES",
        help=f"modules whose WORKFLOWS (and ACTIVITIES) to serve, comma-separated; default: "
        f"{WORKFLOWS_ENV}, else {default_workflows or 'none (the gate and the tools only)'}",
    )
    parser.add_argument(
        "--tools",
        metavar="MODULES",
        help=f"tool modules, comma-separated ('builtin' = the built-in toolkits); default: "
        f"{TOOLS_ENV}, else the built-in toolkits",
    )
    parser.add_argument(
        "--previewers",
        metavar="MODULES",
        help="modules of @hitl.tools.previewer functions: the worker's preview and risk of "
        f"calls of tools that are not hitl tools (a framework's); default: {PREVIEWERS_ENV}",
    )
    parser.add_argument(
        "--tools-only",
        action="store_true",
        help="serve only the tools' activities (no workflows, no model): a worker for "
        "commands, with no secrets in its environment",
    )
    return parser


def build_worker_parser(default_workflows: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worker.py", description="Run a worker for agent runs and their tools."
    )
    return add_worker_arguments(parser, default_workflows)


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
        named = getattr(args, "previewers", None) or os.environ.get(PREVIEWERS_ENV) or ""
        previewers = load_previewers([m.strip() for m in named.split(",") if m.strip()])
    except ToolRegistrationError as error:
        log.error("worker.tools_refused", error=str(error))
        print(f"worker: {error}", flush=True)
        return 2
    try:
        # Checked at start so a deploy with a broken rules file fails here, not by asking
        # a person about every call (which is what it does if the file breaks later).
        rules = load_rules()
    except RulesError as error:
        log.error("worker.rules_refused", error=str(error))
        print(f"worker: {error}", flush=True)
        return 2
    workflows: list[type] = []
    activities: list[Callable[..., Any]] = []
    if not args.tools_only:  # a tools-only worker serves no workflow and holds no secrets
        try:
            workflows, activities = load_workflows(
                workflow_modules(args.workflows, getattr(args, "default_workflows", None))
            )
        except WorkflowModuleError as error:
            log.error("worker.workflows_refused", error=str(error))
            print(f"worker: {error}", flush=True)
            return 2
    try:
        # Before the client: its runtime carries the metrics, its plugin the spans.
        telemetry = install("hitl-worker")
    except TelemetryConfigError as error:
        log.error("worker.telemetry_refused", error=str(error))
        print(f"worker: {error}", flush=True)
        return 2
    try:
        client = await connect(settings, telemetry)
    except RuntimeError as error:
        log.error("worker.no_server", address=settings.address, error=str(error))
        print(
            f"worker: cannot reach the Temporal server at {settings.address} ({error}); start "
            "it with `make server`, or set TEMPORAL_ADDRESS",
            flush=True,
        )
        return 2
    worker = build_worker(
        client,
        task_queue,
        tools=registry,
        tools_only=args.tools_only,
        previewers=previewers,
        workflows=workflows,
        activities=activities,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        if telemetry is not None:
            await stack.enter_async_context(telemetry.running())
        await stack.enter_async_context(worker)
        log.info(
            "worker.started",
            address=settings.address,
            namespace=settings.namespace,
            task_queue=task_queue,
            tools=registry.names,
            tools_only=args.tools_only,
            workflows=[item.__name__ for item in workflows],
            rules=(
                {"file": str(rules.path), "mode": rules.mode, "digest": rules.digest}
                if rules is not None
                else None
            ),
            telemetry=_telemetry_said(telemetry),
        )
        await stop.wait()
    log.info("worker.stopped")
    return 0


def _telemetry_said(telemetry: Telemetry | None) -> str:
    if telemetry is None:
        return "off"
    settings = telemetry.settings
    parts = [
        name for name, on in (("traces", settings.traces), ("metrics", settings.metrics)) if on
    ]
    said = ("otlp " + "+".join(parts)) if parts else ""
    if telemetry.metrics_address is not None:
        host, port = telemetry.metrics_address
        said += f"{', ' if said else ''}prometheus http://{host}:{port}/metrics"
    return said
