"""Time-skipping: an approval nobody decides is auto-rejected after 30 minutes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.devserver import temporal_binary
from hitl.models import ApprovalStatus, NotifyEvent, RunState
from hitl.visibility import ensure_search_attributes
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in
from tests.helpers import start_run as start
from tests.helpers import status, wait_pending
from worker import build_worker


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_binary("temporal-test-server"),
        # The SDK waits 5 s by default; a busy CI machine can take longer to start it.
        test_server_startup_timeout=timedelta(seconds=60),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(environment.client)
    yield environment
    await environment.shutdown()


async def test_an_approval_left_pending_31_minutes_is_auto_rejected(
    skipping: WorkflowEnvironment, workspace: Path
) -> None:
    client = skipping.client
    async with build_worker(client, "tq-timeout"):
        handle = await start(client, "tq-timeout", workspace)
        with skipping.auto_time_skipping_disabled():
            [record] = await wait_pending(handle)
        assert record.expires_at - record.created_at == timedelta(minutes=30)
        await skipping.sleep(timedelta(minutes=31))
        result = await handle.result()
        assert (await status(handle)).pending == []

    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED
    assert done.reviewer == "system:timeout"
    assert done.reason and "no decision came within 30 min" in done.reason
    assert [(d.kind.value, d.outcome) for d in done.decisions] == [("timeout", "applied")]
    assert done.reviewed_at is not None
    assert done.reviewed_at - done.created_at >= timedelta(minutes=30)
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER), "nothing deleted"
    assert result.state is RunState.COMPLETED
    assert "no decision came within 30 min" in result.answer


EVENTS: list[tuple[str, timedelta]] = []


@activity.defn(name=contract.ACTIVITY_NOTIFY_EVENT)
async def capture(event: NotifyEvent) -> None:
    """A channel that notes each event and when, in the approval's own time."""
    EVENTS.append((event.event, event.at - event.approval.created_at))


async def test_reviewers_are_reminded_at_half_the_timeout_then_told_it_timed_out(
    skipping: WorkflowEnvironment, workspace: Path
) -> None:
    EVENTS.clear()
    client = skipping.client
    async with build_worker(client, "tq-remind", activities=[capture]):
        handle = await start(client, "tq-remind", workspace)
        with skipping.auto_time_skipping_disabled():
            await wait_pending(handle)
        await skipping.sleep(timedelta(minutes=31))
        await handle.result()
    assert [name for name, _ in EVENTS] == ["pending", "reminder", "timed_out"]
    reminded = EVENTS[1][1]
    assert timedelta(minutes=15) <= reminded < timedelta(minutes=16), reminded
    assert EVENTS[2][1] >= timedelta(minutes=30)
