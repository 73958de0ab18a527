"""Every input a decision handler can receive ends applied or refused; none wedges a run.

Each test sends what an attacker or a careless reviewer would, through the real client
or the `temporal` CLI, then checks the approval is still decidable and the run finishes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle
from temporalio.common import RawValue
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.models import (
    MAX_REFUSED_PER_APPROVAL,
    MAX_REFUSED_PER_RUN,
    ApprovalRecord,
    ApprovalStatus,
    NotifyEvent,
    RunState,
)
from tests.conftest import NEW_LOGS, OTHER, files_in
from tests.helpers import (
    approvals,
    assert_replays,
    decision,
    start_run,
    status,
    temporal_cli,
    turn,
    wait_decisions,
    wait_pending,
)
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _finish_with_approval(handle: WorkflowHandle, record: ApprovalRecord) -> None:
    """The approval still takes a valid decision, and the run completes."""
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice"))
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.state is RunState.COMPLETED
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "alice"


async def test_a_signal_with_no_input_is_refused_and_the_run_still_finishes(
    env: WorkflowEnvironment, client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    common = ["--address", _address(env), "--workflow-id", handle.id]
    await temporal_cli("workflow", "signal", *common, "--name", "approve")
    two = json.dumps(decision(record.id))
    await temporal_cli(
        "workflow", "signal", *common, "--name", "reject", "--input", two, "--input", two
    )
    refused = await wait_decisions(handle, None, 2)
    assert "this one carried 0 values" in refused[0].refusal
    assert "this one carried 2 values" in refused[1].refusal
    [still] = await wait_pending(handle)
    assert still.id == record.id
    await _finish_with_approval(handle, record)
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    await assert_replays(handle)


async def test_payloads_in_other_encodings_are_refused_not_dropped(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    unknown = Payload(metadata={"encoding": b"binary/x-made-up"}, data=b"\x00\x01approve")
    await handle.signal(contract.SIGNAL_APPROVE, RawValue(unknown))
    plain = Payload(metadata={"encoding": b"binary/plain"}, data=b"approve please")
    await handle.signal(contract.SIGNAL_APPROVE, RawValue(plain))
    bad_json = Payload(metadata={"encoding": b"json/plain"}, data=b"{not json")
    await handle.signal(contract.SIGNAL_APPROVE, RawValue(bad_json))
    await handle.signal(contract.SIGNAL_APPROVE, [decision(record.id)])
    await handle.signal("aprove", decision(record.id))
    refused = await wait_decisions(handle, None, 5)
    texts = [item.refusal for item in refused]
    assert "could not be decoded (encoding binary/x-made-up)" in texts[0]
    assert "got bytes" in texts[1]
    assert "could not be decoded (encoding json/plain)" in texts[2]
    assert "got list" in texts[3]
    assert "aprove is not a signal this run handles" in texts[4]
    assert all(item.size < 1000 for item in refused)
    await _finish_with_approval(handle, record)


async def test_oversized_and_deeply_nested_decisions_leave_a_bounded_record(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    huge = "x" * 1_500_000
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason=huge))
    await handle.signal(contract.SIGNAL_REJECT, decision("apr_unknown", reason=huge))
    deep = "[" * 5_000 + '"deep"' + "]" * 5_000
    nested = json.dumps(decision(record.id)).replace('"alice"', f'"alice", "args": {deep}')
    await handle.signal(
        contract.SIGNAL_MODIFY,
        RawValue(Payload(metadata={"encoding": b"json/plain"}, data=nested.encode())),
    )
    await handle.signal(
        contract.SIGNAL_APPROVE, decision(record.id, comment="y" * 5_000, extra="field")
    )
    log = await wait_decisions(handle, record.id, 2)
    assert all(entry.outcome == "refused" for entry in log)
    assert "bytes; a decision is at most" in (log[0].refusal or "")
    assert "comment: String should have at most 2000 characters" in (log[1].refusal or "")
    assert all(len(entry.excerpt or "") <= 300 for entry in log)
    unattached = await wait_decisions(handle, None, 2)
    assert "bytes; a decision is at most" in unattached[0].refusal
    assert unattached[0].size > 1_500_000 and len(unattached[0].excerpt) <= 300
    assert "could not be decoded" in unattached[1].refusal
    await _finish_with_approval(handle, record)
    result = await handle.result()
    assert len(result.model_dump_json()) < 100_000, "the result carries no refused payload"


async def test_names_the_run_uses_for_itself_and_contradictory_kinds_are_refused(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    forged = [
        (contract.SIGNAL_REJECT, decision(record.id, "system:timeout", reason="forged")),
        (contract.SIGNAL_APPROVE, decision(record.id, "policy")),
        (contract.SIGNAL_APPROVE, decision(record.id, "  Policy:auto ")),
        (contract.SIGNAL_APPROVE, decision(record.id, "SYSTEM:admin")),
        (contract.SIGNAL_APPROVE, decision(record.id, "eve\x1b[2K\rbob")),
        (contract.SIGNAL_APPROVE, {**decision(record.id, "mallory"), "kind": "reject"}),
        (contract.SIGNAL_REJECT, {**decision(record.id, "mallory"), "kind": "approve"}),
    ]
    for name, payload in forged:
        await handle.signal(name, payload)
    log = await wait_decisions(handle, record.id, len(forged))
    assert [entry.outcome for entry in log] == ["refused"] * len(forged)
    assert all("reserved for decisions the run makes itself" in (e.refusal or "") for e in log[:4])
    assert "no control characters" in (log[4].refusal or "")
    assert "the payload says kind reject but was sent as approve" in (log[5].refusal or "")
    assert "the payload says kind approve but was sent as reject" in (log[6].refusal or "")
    assert (await status(handle)).state is RunState.AWAITING_APPROVAL
    await _finish_with_approval(handle, record)


async def test_a_flood_of_refused_decisions_is_counted_not_kept(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    flood = MAX_REFUSED_PER_APPROVAL + 15
    await asyncio.gather(
        *(
            handle.signal(contract.SIGNAL_APPROVE, decision(record.id, action_digest=f"d{i}"))
            for i in range(flood)
        ),
        *(
            handle.signal(contract.SIGNAL_APPROVE, decision(f"apr_x{i}"))
            for i in range(MAX_REFUSED_PER_RUN + 5)
        ),
    )
    for _ in range(200):
        [current] = [r for r in await approvals(handle) if r.id == record.id]
        run_status = await status(handle)
        if len(current.decisions) + current.refused_dropped == flood and (
            len(run_status.refused_decisions) + run_status.refused_dropped
            == MAX_REFUSED_PER_RUN + 5
        ):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(
            f"the flood never settled: {len(current.decisions)} kept and "
            f"{current.refused_dropped} dropped on the approval, "
            f"{len(run_status.refused_decisions)} kept and {run_status.refused_dropped} "
            "dropped on the run"
        )
    assert len(current.decisions) == MAX_REFUSED_PER_APPROVAL and current.refused_dropped == 15
    assert len(run_status.refused_decisions) == MAX_REFUSED_PER_RUN
    assert run_status.refused_dropped == 5
    await _finish_with_approval(handle, record)


@activity.defn(name=contract.ACTIVITY_NOTIFY_EVENT)
async def slow_notify(event: NotifyEvent) -> None:
    """A notification channel that takes its time."""
    await asyncio.sleep(4)


async def test_the_deadline_runs_from_when_the_approval_was_created(
    client: Client, workspace: Path
) -> None:
    task_queue = "tq-slow-notify"
    async with build_worker(client, task_queue, activities=[slow_notify]):
        handle = await start_run(
            client, task_queue, workspace, tool_approval_timeouts={"delete_files": 1}
        )
        result = await asyncio.wait_for(handle.result(), timeout=30)
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED and done.reviewer == "system:timeout"
    assert done.reviewed_at is not None
    # The auto-rejection came at the advertised deadline, not after the slow notification.
    assert done.reviewed_at - done.expires_at < timedelta(seconds=2)
    assert done.expires_at.isoformat() in (done.reason or "")


async def test_text_that_is_not_valid_unicode_is_refused_not_kept(
    client: Client, task_queue: str, workspace: Path
) -> None:
    # JSON can spell a lone surrogate; Python decodes it but can never encode it again,
    # so a run that kept it could not write its history.
    handle = await start_run(
        client,
        task_queue,
        workspace,
        script=[
            turn(("read_file", '{"path": "\\udc9b.log"}')),
            turn(("delete_files", {"paths": ["logs/app-2026-10-01.log"]})),
        ],
    )
    [record] = await wait_pending(handle)
    raw = f'{{"approval_id": "{record.id}", "reviewer": "eve\\udc9b", "comment": "\\ud800"}}'
    await handle.signal(
        contract.SIGNAL_APPROVE,
        RawValue(Payload(metadata={"encoding": b"json/plain"}, data=raw.encode())),
    )
    # The data converter itself refuses such JSON, so the decision names no approval.
    [refused] = await wait_decisions(handle, None, 1)
    assert "could not be decoded" in refused.refusal and "surrogate" in refused.refusal
    await _finish_with_approval(handle, record)
    result = await handle.result()
    first = result.tool_runs[0]
    assert not first.result.ok and "not valid Unicode" in (first.result.error or "")
