"""docs/tools.md, run as written: its files copied out, its commands run against a server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.processes import ROOT, WorkerProcess
from tests.test_cli import Hitl

GUIDE = ROOT / "docs" / "tools.md"
BLOCK = re.compile(r'```\w+ title="([^"]+)"\n(.*?)```', re.DOTALL)


def unpack(folder: Path) -> list[str]:
    """Every titled code block of the guide, written to the file its title names."""
    names = []
    for name, body in BLOCK.findall(GUIDE.read_text()):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        names.append(name)
    return names  # no myshop/__init__.py: the guide shows none, and none is needed


async def _run(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _pending_id(hitl: Hitl, tool: str) -> str:
    for _ in range(200):
        code, out, _ = await hitl("pending", "--json", "--tool", tool)
        items = json.loads(out) if code == 0 else []
        if items:
            return str(items[0]["id"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending {tool} approval was listed")


async def test_the_guide_runs_as_written(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    assert unpack(tmp_path) == [
        "myshop/tools.py",
        "refund-script.json",
        "myshop/payout.py",
        "run_payout.py",
    ]
    address = env.client.service_client.config.target_host
    ledger = tmp_path / "ledger.jsonl"
    task_queue = "tq-guide"
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_"))},
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
        "HITL_TASK_QUEUE": task_queue,
        "HITL_TOOLS": "myshop.tools,builtin",
        "PYTHONPATH": str(tmp_path),
        "SHOP_LEDGER": str(ledger),
    }
    hitl = Hitl(address, task_queue)
    hitl.env.update(base)
    worker = WorkerProcess(address, task_queue)
    worker.env = base
    await worker.start()  # `python worker.py`, as the guide says
    try:
        (tmp_path / "shop").mkdir()
        code, out = await _run(
            sys.executable,
            str(ROOT / "starter.py"),
            "Refund order 42, it arrived broken",
            "--workspace",
            str(tmp_path / "shop"),
            "--tools",
            "lookup_order,refund",
            "--script",
            "refund-script.json",
            "--no-wait",
            "--id",
            "guide-refund",
            env=base,
            cwd=tmp_path,
        )
        assert code == 0, out
        approval = await _pending_id(hitl, "refund")
        code, shown, _ = await hitl("show", approval, COLUMNS="300")
        assert "refund $150.00 on order 42" in shown and "refunding $150" in shown
        code, out, err = await hitl("approve", approval)
        assert code == 0, err
        result = await client.get_workflow_handle("guide-refund").result()
        assert result["state"] == "completed"
        assert [json.loads(line)["key"] for line in ledger.read_text().splitlines()] == [approval]

        payout = await asyncio.create_subprocess_exec(
            sys.executable,
            "run_payout.py",
            address,
            "guide-payout",
            cwd=tmp_path,
            env=base,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        approval = await _pending_id(hitl, "payout")
        code, out, err = await hitl("approve", approval)
        assert code == 0, err
        printed, _ = await asyncio.wait_for(payout.communicate(), timeout=60)
        assert "paid ACME $950.00" in printed.decode(), printed.decode()
    finally:
        await worker.stop()
