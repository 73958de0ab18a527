"""Three worker processes on one task queue, a few hundred runs, one worker SIGKILLed midway.

Every run completes; no approved action happens twice; nothing unapproved happens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.models import ApproveDecision, RejectDecision, RunResult, RunState
from hitl.reviews import Reviews
from tests.helpers import start_run, turn
from tests.processes import WorkerProcess
from tests.soak import SCALE

RUNS = 200 * SCALE
WORKERS = 3


async def test_three_workers_one_killed_midway_every_run_completes_and_nothing_happens_twice(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    address = env.client.service_client.config.target_host
    task_queue = f"tq-many-{uuid.uuid4().hex[:6]}"
    workers = [await WorkerProcess(address, task_queue).start() for _ in range(WORKERS)]
    command = ["sh", "-c", "echo ran >> ran.txt"]
    workspaces = [tmp_path / f"ws{i}" for i in range(RUNS)]
    for workspace in workspaces:
        workspace.mkdir()
    try:
        handles = await asyncio.gather(
            *(
                start_run(client, task_queue, ws, script=[turn(("run_command", {"argv": command}))])
                for ws in workspaces
            )
        )
        reviews = Reviews(client)
        wanted = {handle.id for handle in handles}
        deadline = time.monotonic() + 120
        while True:
            pending = [p for p in await reviews.pending() if p.session_id in wanted]
            if len(pending) == RUNS:
                break
            assert time.monotonic() < deadline, f"{len(pending)} of {RUNS} runs paused"
            await asyncio.sleep(0.5)
        # Even runs approved, odd runs rejected; a worker dies while the approved commands run.
        approve = {handle.id for index, handle in enumerate(handles) if index % 2 == 0}

        def build(item: object) -> ApproveDecision | RejectDecision:
            assert hasattr(item, "id") and hasattr(item, "session_id")
            if item.session_id in approve:
                return ApproveDecision(approval_id=item.id, reviewer="ops")
            return RejectDecision(approval_id=item.id, reviewer="ops", reason="not this one")

        deciding = asyncio.create_task(reviews.decide_many(pending, build))
        deadline = time.monotonic() + 120
        while sum((ws / "ran.txt").exists() for ws in workspaces) < RUNS // 8:
            assert time.monotonic() < deadline, f"fewer than {RUNS // 8} approved runs ran"
            await asyncio.sleep(0.05)
        await workers[1].kill()
        await deciding
        results: list[RunResult] = await asyncio.wait_for(
            asyncio.gather(
                *(client.get_workflow_handle(h.id, result_type=RunResult).result() for h in handles)
            ),
            timeout=300,
        )
    finally:
        for worker in workers:
            await worker.stop()
    ran = {
        handle.id: len((ws / "ran.txt").read_text().splitlines())
        if (ws / "ran.txt").exists()
        else 0
        for handle, ws in zip(handles, workspaces, strict=True)
    }
    assert all(result.state is RunState.COMPLETED for result in results)
    assert all(ran[run] == 0 for run in wanted - approve), "nothing unapproved ran"
    assert all(ran[run] <= 1 for run in approve), "no approved command ran twice"
    for handle, result in zip(handles, results, strict=True):
        [record] = result.approvals
        if handle.id in approve and record.result is not None and record.result.ok:
            assert ran[handle.id] == 1
    interrupted = sum(1 for run in approve if ran[run] == 0)
    print(f"\n{RUNS} runs on {WORKERS} workers, one killed: {interrupted} approved commands "
          "were cut off by the kill and reported, none repeated")  # fmt: skip
