"""The audit trail across runs: every approval with every decision over a time range."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from hitl import contract
from hitl.models import ApprovalStatus, RunLimits
from hitl.reviews import Reviews
from tests.helpers import continue_as_new_by_junk, decision, start_run, turn, wait_pending
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")


async def test_records_cover_every_run_of_a_continue_as_new_chain_once(
    client: Client, task_queue: str, workspace: Path
) -> None:
    began = datetime.now(UTC) - timedelta(seconds=5)
    script = [
        turn(("delete_files", {"paths": ["logs/old-1.log"]})),
        turn(("delete_files", {"paths": ["logs/old-2.log"]})),
    ]
    handle = await start_run(
        client, task_queue, workspace, script=script, limits=RunLimits(continue_as_new_events=200)
    )
    [first] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_APPROVE, decision(first.id, "alice"))
    second = None
    for _ in range(200):
        pending = [r for r in await wait_pending(handle) if r.id != first.id]
        if pending:
            [second] = pending
            break
        await asyncio.sleep(0.05)
    assert second is not None
    latest = await continue_as_new_by_junk(client, handle)
    await latest.signal(contract.SIGNAL_REJECT, decision(second.id, "bob", reason="not today"))
    await asyncio.wait_for(latest.result(), timeout=30)

    problems: list[str] = []
    found = [
        record
        async for record in Reviews(client).records(since=began, problems=problems)
        if record.session_id == handle.id
    ]
    # Other tests leave ended runs behind with no worker to replay them: those are said in
    # `problems`; none of this run's may be.
    assert not [problem for problem in problems if handle.id in problem], problems
    by_id = {record.id: record for record in found}
    assert sorted(by_id) == sorted([first.id, second.id]) and len(found) == 2
    assert by_id[first.id].status is ApprovalStatus.APPROVED
    assert by_id[first.id].reviewer == "alice"
    assert by_id[second.id].status is ApprovalStatus.REJECTED
    assert [(d.reviewer, d.outcome) for d in by_id[second.id].decisions][-1] == (
        "bob",
        "applied",
    )

    later = datetime.now(UTC) + timedelta(seconds=1)
    after = [r async for r in Reviews(client).records(since=later) if r.session_id == handle.id]
    assert after == []
    assert [r async for r in Reviews(client).records(since=began, until=began)] == [], (
        "nothing was created before it began"
    )


async def test_a_run_waiting_since_before_the_range_is_not_read(
    client: Client, workspace: Path
) -> None:
    """An export of the last hour does not read every run that has waited for a month: a
    run that stamped no change since the range began opened no approval in it."""
    queue = f"tq-old-{uuid.uuid4().hex[:8]}"
    before = datetime.now(UTC)
    async with build_worker(client, queue):
        handle = await start_run(client, queue, workspace)
        await wait_pending(handle)
    # Its worker is gone: reading it would cost a query's timeout and name it a problem.
    since = datetime.now(UTC) + timedelta(milliseconds=10)
    await asyncio.sleep(0.05)
    try:
        problems: list[str] = []
        read = [r async for r in Reviews(client).records(since, problems=problems)]
        assert all(r.session_id != handle.id for r in read)
        assert not [p for p in problems if handle.id in p], problems
        # From before it began, it is read (and, with no worker, named as unreadable).
        problems = []
        _ = [r async for r in Reviews(client).records(before, problems=problems)]
        assert [p for p in problems if handle.id in p], problems
    finally:
        await handle.terminate("test over")
