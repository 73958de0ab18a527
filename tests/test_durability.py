"""A pending approval survives a restart of the Temporal server itself (SQLite persistence)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client

from hitl import contract
from hitl.config import connect, load_settings
from hitl.devserver import DevServer, free_port
from hitl.models import ApprovalStatus, RunResult
from tests.conftest import NEW_LOGS, OTHER, files_in
from tests.helpers import decision, start_run, wait_pending
from worker import build_worker


async def _client(address: str) -> Client:
    settings = load_settings({"TEMPORAL_ADDRESS": address, "TEMPORAL_CONFIG_FILE": "/none"})
    for _ in range(100):
        try:
            return await connect(settings)
        except RuntimeError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"no Temporal server answered at {address}")


async def test_a_pending_approval_survives_a_server_and_worker_restart(
    tmp_path: Path, workspace: Path
) -> None:
    server = DevServer(tmp_path / "state" / "temporal.db", port=free_port(), headless=True)
    with server:
        client = await _client(server.address)
        async with build_worker(client, "tq-durable"):
            handle = await start_run(client, "tq-durable", workspace)
            [record] = await wait_pending(handle)
    # Server and worker are gone; only the SQLite file remains.
    with server:
        client = await _client(server.address)
        handle = client.get_workflow_handle(handle.id, result_type=RunResult)
        async with build_worker(client, "tq-durable"):
            [still] = await wait_pending(handle)
            assert still.id == record.id and still.expires_at == record.expires_at
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-outage"))
            result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.approvals[0].status is ApprovalStatus.APPROVED
    assert result.approvals[0].reviewer == "after-outage"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
