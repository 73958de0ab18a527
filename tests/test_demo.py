"""`make demo`'s program, run as a user would with piped answers: approve, then reject."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from hitl.devserver import free_port, port_free

ROOT = Path(__file__).resolve().parent.parent


async def test_the_demo_runs_unattended_with_piped_answers(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TEMPORAL_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hitl.demo",
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path / "state"),
        "--workspace",
        str(tmp_path / "ws"),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(b"y\nn\n"), timeout=120)
    text = out.decode()
    assert process.returncode == 0, text
    assert text.count("Approve? [y/n/e(dit)]:") == 2, text
    assert "scripted model" in text
    assert "logs/app-2026-10-02.log" in text  # the affected files are listed
    assert "check: exactly the old logs are gone; newer logs and config kept" in text
    assert "check: nothing was deleted" in text
    assert "Decision applied: reject" in text
    assert "/namespaces/default/workflows" in text
    assert "Stopped the worker and the dev server this demo started." in text
    assert (tmp_path / "state" / "temporal.db").exists()
    assert port_free(port), "the demo's server is still running"
