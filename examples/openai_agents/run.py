"""`make example-openai-agents`: a dev server of its own, the worker and the starter, in one
process. Offline unless OPENAI_API_KEY is set. `--yes` approves everything; otherwise
answer at the prompts (answers may be piped: `printf 'y\\nn\\nno email\\n' | make ...`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from hitl.devserver import DevServer, free_port
from hitl.entry import exit_now


def main(argv: list[str] | None = None) -> int:
    from examples.openai_agents import starter

    if os.environ.get("TEMPORAL_ADDRESS"):
        return asyncio.run(starter.main(argv))
    with tempfile.TemporaryDirectory(prefix="hitl-oai-example-") as state:
        server = DevServer(Path(state) / "temporal.db", port=free_port(), headless=True)
        print(f"Starting a Temporal dev server on {server.address}", flush=True)
        with server:
            os.environ["TEMPORAL_ADDRESS"] = server.address
            os.environ.setdefault("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
            os.environ.setdefault("HITL_EXAMPLE_OUTBOX", str(Path(state) / "outbox"))
            return asyncio.run(starter.main(argv))


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))  # no interpreter finalization: sdk-python#300
