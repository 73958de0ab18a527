"""Concurrent decisions, and decisions landing at the deadline: exactly one outcome each time."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle

from hitl import contract
from hitl.models import ApprovalRecord, ApprovalStatus, DecisionKind
from tests.conftest import make_logs
from tests.helpers import (
    SlowQueries,
    approvals,
    assert_replays,
    decision,
    split_after_local_activity,
    start_run,
    turn,
    wait_pending,
)
from tests.soak import SCALE
from tests.usertools.scored import OpenedTransfer, ScoredTransfer
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")

RACES = 6 * SCALE
DECIDERS = 12


def _one_decision(index: int, approval_id: str) -> tuple[str, dict]:
    reviewer = f"reviewer-{index}"
    kind = index % 3
    if kind == 0:
        return contract.SIGNAL_APPROVE, decision(approval_id, reviewer, decision_id=f"d{index}")
    if kind == 1:
        return contract.SIGNAL_REJECT, decision(
            approval_id, reviewer, reason="no", decision_id=f"d{index}"
        )
    return contract.SIGNAL_MODIFY, decision(
        approval_id, reviewer, args={"paths": ["logs/app-2026-10-01.log"]}, decision_id=f"d{index}"
    )


async def test_many_concurrent_decisions_on_one_approval_have_exactly_one_outcome(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    for race in range(RACES):
        workspace = make_logs(tmp_path / f"ws{race}")
        handle = await start_run(client, task_queue, workspace)
        [record] = await wait_pending(handle)
        sends = [_one_decision(i, record.id) for i in range(DECIDERS)]
        random.Random(race).shuffle(sends)
        await asyncio.gather(*(handle.signal(name, payload) for name, payload in sends))
        result = await asyncio.wait_for(handle.result(), timeout=30)
        [done] = result.approvals
        applied = [entry for entry in done.decisions if entry.outcome == "applied"]
        refused = [entry for entry in done.decisions if entry.outcome == "refused"]
        assert len(applied) == 1, done.decisions
        assert len(refused) == DECIDERS - 1
        assert all("was already" in (entry.refusal or "") for entry in refused)
        # The winner is the first to arrive, and the record says what it decided.
        assert done.decisions[0] is not None and done.decisions[0].outcome == "applied"
        winner = applied[0]
        assert done.reviewer == winner.reviewer
        expected = {
            DecisionKind.APPROVE: ApprovalStatus.APPROVED,
            DecisionKind.REJECT: ApprovalStatus.REJECTED,
            DecisionKind.MODIFY: ApprovalStatus.MODIFIED,
        }[winner.kind]
        assert done.status is expected
        ran = done.result is not None
        assert ran == (expected is not ApprovalStatus.REJECTED)


async def test_decisions_landing_at_the_deadline_have_exactly_one_outcome(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    outcomes = []
    for race in range(RACES):
        workspace = make_logs(tmp_path / f"ws{race}")
        script = [
            turn(("delete_files", {"paths": ["logs/app-2026-10-01.log"]})),
            turn(("write_file", {"path": "notes.txt", "content": "keeps the run waiting"})),
        ]
        handle = await start_run(
            client,
            task_queue,
            workspace,
            script=script,
            tool_approval_timeouts={"delete_files": 1.0},
        )
        [record] = await wait_pending(handle)
        # Bursts centred ever later around the deadline: from well before to just after.
        centre = record.expires_at + timedelta(seconds=-0.25 + 0.1 * race)

        async def send(
            index: int,
            centre: datetime = centre,
            approval_id: str = record.id,
            handle: WorkflowHandle = handle,
        ) -> None:
            moment = centre + timedelta(seconds=(index - DECIDERS / 2) * 0.02)
            await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))
            name, payload = _one_decision(index, approval_id)
            await handle.signal(name, payload)

        await asyncio.gather(*(send(i) for i in range(DECIDERS)))
        for _ in range(400):  # until the approval is decided: by a decision or the timer
            [done] = [r for r in await approvals(handle) if r.id == record.id]
            if done.status is not ApprovalStatus.PENDING:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError(f"race {race}: neither a decision nor the timer decided")
        await handle.terminate("race checked")
        applied = [entry for entry in done.decisions if entry.outcome == "applied"]
        assert len(applied) == 1, done.decisions
        winner = applied[0]
        outcomes.append(winner.kind)
        in_time = [
            entry
            for entry in done.decisions
            if entry.kind is not DecisionKind.TIMEOUT and entry.received_at < done.expires_at
        ]
        if winner.kind is DecisionKind.TIMEOUT:
            assert not in_time, "a decision that came in time must win over the timeout"
            assert done.reviewer == "system:timeout"
        else:
            assert winner.received_at < done.expires_at, "a late decision was applied"
            assert winner is in_time[0]
        assert len(done.decisions) == DECIDERS + (winner.kind is DecisionKind.TIMEOUT)
        for entry in done.decisions:
            if entry.outcome == "refused" and entry.received_at >= done.expires_at:
                assert any(
                    word in (entry.refusal or "") for word in ("deadline", "timed out", "already")
                )
    # Over the bursts both ways of ending happen: a reviewer in time, and the timeout.
    assert DecisionKind.TIMEOUT in outcomes and len(set(outcomes)) > 1, outcomes


async def test_decisions_raced_while_a_query_is_answered_late_replay_as_they_ran(
    client: Client, task_queue: str, workspace: Path
) -> None:
    # Two decisions wait at the server with a query while no worker runs. The new worker
    # judges the first in a local activity (verify_decision) and answers the query late,
    # which completes that task early: the activity's marker in it, and in the next the
    # approval settled with the second decision still queued behind it, the first place
    # the ledger asks whether a queued decision is answered. Every replay must agree.
    queue = f"{task_queue}-late"
    async with build_worker(client, queue):
        handle = await start_run(client, queue, workspace)
        [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice", decision_id="a"))
    await handle.signal(
        contract.SIGNAL_REJECT, decision(record.id, "bob", reason="no", decision_id="b")
    )
    asked = asyncio.create_task(
        handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    )
    await asyncio.sleep(0.5)
    async with build_worker(client, queue, interceptors=[SlowQueries()]):
        await asyncio.wait_for(asked, 30)
        result = await asyncio.wait_for(handle.result(), 60)
        [done] = result.approvals
        assert done.status is ApprovalStatus.APPROVED
        assert [entry.outcome for entry in done.decisions] == ["applied", "refused"]
        after = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    assert [item.status for item in after] == [ApprovalStatus.APPROVED]
    history = await handle.fetch_history()
    assert split_after_local_activity(history), "the late query split no task: nothing proven"
    await assert_replays(handle)


async def test_a_riskier_modification_judged_while_a_query_is_answered_late_replays(
    client: Client, task_queue: str
) -> None:
    # A validator that scores in the workflow: right after verify_decision's result (split
    # from it by the late query) the ledger first asks whether a riskier modification is
    # judged at its own risk, and verifies again if so. Every replay must agree.
    queue = f"{task_queue}-scored"
    async with build_worker(client, queue, workflows=[ScoredTransfer]):
        handle = await client.start_workflow(
            ScoredTransfer.run, 50, id=f"scored-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, "alice", args={"amount": 500}))
    asked = asyncio.create_task(
        handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    )
    await asyncio.sleep(0.5)
    async with build_worker(
        client, queue, workflows=[ScoredTransfer], interceptors=[SlowQueries()]
    ):
        await asyncio.wait_for(asked, 30)
        assert await asyncio.wait_for(handle.result(), 60) == (
            "modified: {'amount': 500} at risk 90"
        )
        after = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    assert [item.risk for item in after] == [90]
    history = await handle.fetch_history()
    assert split_after_local_activity(history), "the late query split no task: nothing proven"
    await assert_replays(handle, workflows=[ScoredTransfer])


async def test_an_agents_riskier_modification_judged_while_a_query_is_answered_late_replays(
    client: Client, task_queue: str, workspace: Path
) -> None:
    # The agent's validator is the check_tool activity: between verify_decision's result
    # and the ledger's risk rule a workflow task of its own, so the rule is first asked
    # with the activity's completion, never right after the local activity.
    queue = f"{task_queue}-late"
    script = [turn(("write_file", {"path": "notes.txt", "content": "hi"}))]
    async with build_worker(client, queue):
        handle = await start_run(client, queue, workspace, script=script)
        [record] = await wait_pending(handle)
    args = {"path": "config/app.yaml", "content": "debug: true"}
    await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, "alice", args=args))
    asked = asyncio.create_task(
        handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    )
    await asyncio.sleep(0.5)
    async with build_worker(client, queue, interceptors=[SlowQueries()]):
        await asyncio.wait_for(asked, 30)
        result = await asyncio.wait_for(handle.result(), 60)
        after = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    [done] = result.approvals
    assert done.status is ApprovalStatus.MODIFIED and done.risk > record.risk, done
    assert [item.risk for item in after] == [done.risk]
    history = await handle.fetch_history()
    assert split_after_local_activity(history), "the late query split no task: nothing proven"
    await assert_replays(handle)


async def test_a_modification_checked_by_a_model_while_a_query_is_answered_late_replays(
    client: Client, task_queue: str
) -> None:
    # A workflow that opens its approval by hand asks the trust rule first where a
    # modification is checked by its model, right after verify_decision's result.
    queue = f"{task_queue}-opened"
    async with build_worker(client, queue, workflows=[OpenedTransfer]):
        handle = await client.start_workflow(
            OpenedTransfer.run, 50, id=f"opened-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, "alice", args={"amount": 5}))
    asked = asyncio.create_task(
        handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    )
    await asyncio.sleep(0.5)
    async with build_worker(
        client, queue, workflows=[OpenedTransfer], interceptors=[SlowQueries()]
    ):
        await asyncio.wait_for(asked, 30)
        # What the reviewer wrote, without the model's defaults they never saw.
        assert await asyncio.wait_for(handle.result(), 60) == "modified: {'amount': 5}"
        after = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    assert [item.status for item in after] == [ApprovalStatus.MODIFIED]
    history = await handle.fetch_history()
    assert split_after_local_activity(history), "the late query split no task: nothing proven"
    await assert_replays(handle, workflows=[OpenedTransfer])
