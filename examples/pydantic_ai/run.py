"""`make example-pydantic-ai`: the Pydantic AI example end to end on this machine.

Starts a Temporal dev server (unless TEMPORAL_ADDRESS names one), the offline scripted
model (unless OPENAI_API_KEY is set: then the real model answers), and the example's
worker; then starts a support request and asks you about each approval
(`printf 'y\\nn\\nwrong address\\n' | make example-pydantic-ai` answers for you). Stops
what it started when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from examples.pydantic_ai import starter
from examples.pydantic_ai.scripted_model import ScriptedServer
from hitl.devserver import DevServer, free_port
from hitl.entry import exit_now
from hitl.models import SCRIPTED_BANNER

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    state = Path(tempfile.mkdtemp(prefix="hitl-pydantic-ai-"))
    ledger = state / "ledger.jsonl"
    with contextlib.ExitStack() as stack:
        address = os.environ.get("TEMPORAL_ADDRESS")
        if not address:
            server = DevServer(state / "temporal.db", port=free_port(), headless=True)
            server.start()
            stack.callback(server.stop)
            address = server.address
            print(f"Started a Temporal dev server on {address}")
        env = {**os.environ, "TEMPORAL_ADDRESS": address, "HITL_EXAMPLE_LEDGER": str(ledger)}
        if os.environ.get("OPENAI_API_KEY"):
            print(f"Model: {env.get('HITL_MODEL') or 'gpt-4.1-mini'} (OPENAI_API_KEY is set)")
        else:
            model = stack.enter_context(ScriptedServer())
            env["HITL_EXAMPLE_MODEL_URL"] = model.base_url
            print(f"Model: offline. {SCRIPTED_BANNER} Set OPENAI_API_KEY for a real one.")
        queue = f"pydantic-ai-example-{os.getpid()}"
        env["HITL_TASK_QUEUE"] = queue
        log = open(state / "worker.log", "ab")
        stack.callback(log.close)
        worker = subprocess.Popen(
            [sys.executable, "-m", "examples.pydantic_ai.worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, worker)
        os.environ.update(env)  # the starter below talks to the same server and queue
        code = asyncio.run(starter.main(argv))
        print(f"\nWhat the tools did ({ledger}):")
        print(ledger.read_text() if ledger.exists() else "nothing\n", end="")
        print(f"(worker log: {state / 'worker.log'})")
        return code


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))  # no interpreter finalization: sdk-python#300
