"""Faults injected into real processes: workers killed with SIGKILL, the server restarted.

After every fault the run completes, every approved action happened exactly once, and
nothing unapproved happened.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.config import connect, load_settings
from hitl.devserver import DevServer, free_port
from hitl.models import ApprovalStatus, RunResult, RunState
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import decision, start_run, wait_pending
from tests.processes import WorkerProcess

KILLS = 3


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def test_killing_the_worker_while_an_approval_waits_loses_nothing(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    for attempt in range(KILLS):
        task_queue = f"tq-kill-pending-{attempt}-{datetime.now(UTC):%H%M%S%f}"
        workspace = make_logs(tmp_path / f"ws{attempt}")
        first = await WorkerProcess(_address(env), task_queue).start()
        handle = await start_run(client, task_queue, workspace)
        [record] = await wait_pending(handle)
        await first.kill()
        # Decided while no worker runs; a new worker process picks the run up.
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-kill"))
        assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
        second = await WorkerProcess(_address(env), task_queue).start()
        try:
            result = await asyncio.wait_for(handle.result(), timeout=60)
        finally:
            await second.stop()
        [done] = result.approvals
        assert done.status is ApprovalStatus.APPROVED and done.reviewer == "after-kill"
        assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
        assert result.state is RunState.COMPLETED


async def _client(address: str) -> Client:
    settings = load_settings({"TEMPORAL_ADDRESS": address, "TEMPORAL_CONFIG_FILE": "/none"})
    for _ in range(150):
        try:
            return await connect(settings)
        except RuntimeError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"no Temporal server answered at {address}")


async def test_a_server_down_across_the_deadline_still_times_the_approval_out(
    tmp_path: Path,
) -> None:
    server = DevServer(tmp_path / "state" / "temporal.db", port=free_port(), headless=True)
    workspace = make_logs(tmp_path / "ws")
    with server:
        client = await _client(server.address)
        worker = await WorkerProcess(server.address, "tq-deadline").start()
        handle = await start_run(
            client, "tq-deadline", workspace, tool_approval_timeouts={"delete_files": 3}
        )
        [record] = await wait_pending(handle)
    # The server is down when the deadline passes; the worker keeps trying to poll.
    await asyncio.sleep(max(0.0, (record.expires_at - datetime.now(UTC)).total_seconds()) + 2)
    try:
        with server:
            client = await _client(server.address)
            handle = client.get_workflow_handle(handle.id, result_type=RunResult)
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        await worker.stop()
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED and done.reviewer == "system:timeout"
    assert "no decision came within 3 s" in (done.reason or "")
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_after_a_server_restart_the_approval_is_still_listed_and_decidable(
    tmp_path: Path,
) -> None:
    server = DevServer(tmp_path / "state" / "temporal.db", port=free_port(), headless=True)
    workspace = make_logs(tmp_path / "ws")
    with server:
        client = await _client(server.address)
        worker = await WorkerProcess(server.address, "tq-restart").start()
        handle = await start_run(client, "tq-restart", workspace)
        [record] = await wait_pending(handle)
    try:
        with server:
            client = await _client(server.address)
            query = (
                f"{contract.APPROVAL_IDS_KEY.name} = '{record.id}' AND ExecutionStatus = 'Running'"
            )
            listed = [execution.id async for execution in client.list_workflows(query)]
            assert listed == [handle.id]
            handle = client.get_workflow_handle(handle.id, result_type=RunResult)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-restart"))
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        await worker.stop()
    assert result.approvals[0].reviewer == "after-restart"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
