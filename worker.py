"""Run a worker: `python worker.py` (configuration from the environment, see README).

    python worker.py --tools myapp.tools,builtin      # or HITL_TOOLS=myapp.tools,builtin
    python worker.py --tools-only --task-queue hitl-commands

The second serves only the tools' activities: run it, with no secrets in its
environment, for the tools a run sends to that queue (`starter.py --tool-queue
run_command=hitl-commands`, docs/secrets.md).
"""

from __future__ import annotations

import asyncio
import sys

from hitl.entry import exit_now
from hitl.plugin import build_worker
from hitl.runworker import build_worker_parser, run_worker

__all__ = ["build_worker", "main"]


async def main(argv: list[str] | None = None) -> int:
    return await run_worker(build_worker_parser().parse_args(argv))


if __name__ == "__main__":
    exit_now(asyncio.run(main(sys.argv[1:])))
