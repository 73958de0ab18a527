"""Runs don't die as they grow: every payload is bounded and long runs continue as new."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from hitl import contract
from hitl.models import MAX_TASK_CHARS, ApprovalStatus, RunLimits, RunResult, RunState
from tests.conftest import OLD_LOGS, files_in
from tests.helpers import approvals, decision, start_run, turn, wait_pending

pytestmark = pytest.mark.usefixtures("worker")

PAYLOAD_LIMIT = 2 * 1024 * 1024
"""Temporal's limit on one payload; the runs here must stay far below it."""


async def chain_histories(client: Client, handle: WorkflowHandle) -> list:
    """The histories of every run of this workflow id, oldest first."""
    runs = [
        execution.run_id async for execution in client.list_workflows(f"WorkflowId = '{handle.id}'")
    ]
    histories = []
    for run_id in reversed(runs):
        histories.append(await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history())
    return histories


def largest_event(histories: list) -> int:
    return max(event.ByteSize() for history in histories for event in history.events)


async def test_a_file_read_again_and_again_does_not_grow_the_model_input_without_bound(
    client: Client, task_queue: str, workspace: Path
) -> None:
    (workspace / "big.txt").write_text("0123456789abcdef" * 4096)  # 64 KiB
    read = turn(("read_file", {"path": "big.txt"}))
    limits = RunLimits(continue_as_new_events=400)
    handle = await start_run(
        client, task_queue, workspace, script=[read] * 60, max_steps=61, limits=limits
    )
    result = await asyncio.wait_for(handle.result(), timeout=120)
    assert result.state is RunState.COMPLETED and result.steps == 61
    assert result.previous_runs, "the run continued as new at least once"
    histories = await chain_histories(client, handle)
    assert len(histories) == len(result.previous_runs) + 1
    # The conversation is trimmed to its budget: no event comes near the payload limit.
    assert largest_event(histories) < 400_000
    assert all(len(history.events) < 600 for history in histories)


async def test_a_pending_approval_is_carried_intact_across_continue_as_new(
    client: Client, task_queue: str, workspace: Path
) -> None:
    limits = RunLimits(continue_as_new_events=200)
    handle = await start_run(client, task_queue, workspace, limits=limits)
    [record] = await wait_pending(handle)
    first_run = (await handle.describe()).run_id
    # Junk decisions grow the history until the run continues as new while it waits.
    latest = client.get_workflow_handle(handle.id, result_type=RunResult)
    for batch in range(40):
        await asyncio.gather(
            *(
                handle.signal(contract.SIGNAL_APPROVE, decision(f"apr_junk{batch}_{i}"))
                for i in range(10)
            )
        )
        await asyncio.sleep(0.1)
        description = await latest.describe()
        if description.run_id != first_run:
            break
    assert description.run_id != first_run, "the run continued as new"
    [carried] = await wait_pending(latest)
    assert carried.id == record.id and carried.expires_at == record.expires_at
    assert carried.action_json == record.action_json and carried.preview == record.preview
    attributes = description.typed_search_attributes
    assert record.id in (attributes.get(contract.APPROVAL_IDS_KEY) or [])
    assert files_in(workspace)[: len(OLD_LOGS)] != [], "nothing deleted while pending"

    await latest.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-carry"))
    result = await asyncio.wait_for(latest.result(), timeout=30)
    [done] = [r for r in result.approvals if r.id == record.id]
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "after-carry"
    assert done.result is not None and done.result.ok
    assert first_run in result.previous_runs
    assert all(name not in files_in(workspace) for name in OLD_LOGS)


async def test_hundreds_of_calls_in_one_turn_are_capped_with_a_clear_error(
    client: Client, task_queue: str, workspace: Path
) -> None:
    calls = [("delete_files", {"paths": [f"logs/file-{i}.log"]}) for i in range(200)]
    handle = await start_run(client, task_queue, workspace, script=[turn(*calls)])
    pending = await wait_pending(handle, count=8)
    assert len(pending) == 8 == len(await approvals(handle))
    for record in pending:
        await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="no"))
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.state is RunState.COMPLETED
    capped = [run for run in result.tool_runs if "too many tool calls" in (run.result.error or "")]
    assert capped and "at most 8 run per turn" in (capped[0].result.error or "")
    assert len(result.model_dump_json()) < PAYLOAD_LIMIT // 4


async def test_an_action_with_tens_of_thousands_of_paths_goes_back_to_the_model(
    client: Client, task_queue: str, workspace: Path
) -> None:
    paths = [f"logs/f-{i:05d}.log" for i in range(30_000)]
    handle = await start_run(
        client, task_queue, workspace, script=[turn(("delete_files", {"paths": paths}))]
    )
    result = await asyncio.wait_for(handle.result(), timeout=30)
    [run] = result.tool_runs
    assert not run.result.ok and "Split the work into smaller calls" in (run.result.error or "")
    assert result.approvals == [] and files_in(workspace)
    assert len(json.dumps(run.args)) < 5_000, "the result keeps an excerpt of the arguments"


async def test_a_task_too_large_fails_at_once_with_what_to_do(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace, task="x" * 1_000_000)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=30)
    message = str(failure.value.cause)
    assert f"at most {MAX_TASK_CHARS:,}" in message and "file in the workspace" in message
