"""Run the reference agent's worker: `python worker.py` (configuration from the
environment, see README).

    python worker.py --tools myapp.tools,builtin      # or HITL_TOOLS=myapp.tools,builtin
    python worker.py --tools-only --task-queue hitl-commands

It is `hitl worker --workflows workflows,activities`: the library's gate and tool
activities (`hitl.plugin.HitlPlugin`) plus the reference agent's `AgentWorkflow` and
its model call. The second serves only the tools' activities: run it, with no secrets
in its environment, for the tools a run sends to that queue (`starter.py --tool-queue
run_command=hitl-commands`, docs/secrets.md).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities import ACTIVITIES
from hitl import plugin
from hitl.entry import exit_now
from hitl.runworker import build_worker_parser, run_worker
from hitl.tools import Tool, ToolRegistry
from workflows import WORKFLOWS

REFERENCE_AGENT = "workflows,activities"
"""The modules `python worker.py` serves (their WORKFLOWS and ACTIVITIES)."""

__all__ = ["REFERENCE_AGENT", "build_worker", "main"]


def build_worker(
    client: Client,
    task_queue: str,
    *,
    tools: Sequence[str | Tool] | ToolRegistry | None = None,
    tools_only: bool = False,
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    **options: Any,
) -> Worker:
    """The reference agent's worker on `task_queue`: `hitl.plugin.build_worker` with
    `AgentWorkflow` and its model call (not for `tools_only`), the built-in toolkits
    unless `tools` says otherwise; `activities` of the same name replace ours."""
    given = {plugin.activity_name(item) for item in activities}
    ours = [item for item in ACTIVITIES if plugin.activity_name(item) not in given]
    return plugin.build_worker(
        client,
        task_queue,
        tools=tools if tools is not None else ["builtin"],
        tools_only=tools_only,
        workflows=[*([] if tools_only else WORKFLOWS), *workflows],
        activities=[*([] if tools_only else ours), *activities],
        **options,
    )


async def main(argv: list[str] | None = None) -> int:
    return await run_worker(build_worker_parser(REFERENCE_AGENT).parse_args(argv))


if __name__ == "__main__":
    exit_now(asyncio.run(main(sys.argv[1:])))
