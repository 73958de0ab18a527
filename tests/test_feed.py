"""The /events feed reads what changed, not what waits (issue 20): a decision made outside
the API (a plain signal) reaches a subscriber without the whole pending set being read
again, a terminated run's approvals leave the feed, and a namespace without HitlUpdatedAt
still runs the gate (no failed workflow task) while the feed falls back to full listings.

Small workflows of this module's own on a worker with `HitlPlugin`, real dev servers, and
the feed (`hitl.api.feed.EventFeed`) as the review API runs it for /events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.api.feed import EventFeed
from hitl.api.schemas import ApprovalEvent
from hitl.devserver import temporal_binary
from hitl.gate import PATCH_UPDATED_AT, ApprovalGate
from hitl.models import ApprovalOutcome, GateState
from hitl.plugin import HitlPlugin
from hitl.reviews import Reviews
from hitl.visibility import missing_search_attributes
from tests.helpers import assert_replays, decision, wait_pending

MANY = 300
"""Runs waiting while one is decided: enough that re-reading them all would show."""


class Waiting(BaseModel):
    customer: str
    quorum: int = 1


@workflow.defn
class WaitingWorkflow:
    """Asks about one invoice and waits for the reviewers' decision."""

    @workflow.init
    def __init__(self, waiting: Waiting) -> None:
        self.gate = ApprovalGate(title=f"invoice {waiting.customer}")

    @workflow.run
    async def run(self, waiting: Waiting) -> ApprovalOutcome:
        return await self.gate.ask(
            "send_invoice", {"customer": waiting.customer, "amount": 12.5}, quorum=waiting.quorum
        )


class Carry(BaseModel):
    customer: str
    approval_id: str | None = None
    state: GateState | None = None


@workflow.defn
class CarryingWorkflow:
    """Opens one approval, continues as new on the `move` signal with it still pending,
    and waits for its decision in the next run."""

    @workflow.init
    def __init__(self, carry: Carry) -> None:
        self.gate = ApprovalGate(state=carry.state)
        self.moving = False

    @workflow.signal
    def move(self) -> None:
        self.moving = True

    @workflow.run
    async def run(self, carry: Carry) -> ApprovalOutcome:
        if carry.approval_id is not None:
            return await self.gate.wait(carry.approval_id)
        record = await self.gate.open_call("send_invoice", {"customer": carry.customer})
        await workflow.wait_condition(lambda: self.moving)
        await self.gate.settle()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            Carry(customer=carry.customer, approval_id=record.id, state=self.gate.snapshot())
        )


@pytest.fixture
async def waiting_worker(client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[WaitingWorkflow, CarryingWorkflow],
        plugins=[HitlPlugin()],
        max_cached_workflows=MANY + 50,
    ) as worker:
        yield worker


async def _start_waiting(
    client: Client, task_queue: str, count: int, quorum: int = 1
) -> list[WorkflowHandle]:
    prefix = f"feed-{uuid.uuid4().hex[:8]}"
    limit = asyncio.Semaphore(50)

    async def start(i: int) -> WorkflowHandle:
        async with limit:
            return await client.start_workflow(
                WaitingWorkflow.run,
                Waiting(customer=f"customer-{i}", quorum=quorum),
                id=f"{prefix}-{i}",
                task_queue=task_queue,
                result_type=ApprovalOutcome,
            )

    handles = await asyncio.gather(*(start(i) for i in range(count)))
    query = (
        f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Running' "
        f"AND {contract.PENDING_KEY.name} > 0"
    )
    deadline = asyncio.get_running_loop().time() + 120
    while (await client.count_workflows(query)).count < count:
        assert asyncio.get_running_loop().time() < deadline, "the runs did not all wait"
        await asyncio.sleep(0.2)
    return list(handles)


async def _pending_id(handle: WorkflowHandle) -> str:
    [record] = await wait_pending(handle)
    return record.id


async def _next(
    queue: asyncio.Queue[ApprovalEvent | None], kind: str, approval_id: str, timeout: float
) -> ApprovalEvent:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            event = await asyncio.wait_for(queue.get(), max(left, 0.01))
        except TimeoutError:
            raise AssertionError(f"no {kind} event for {approval_id} in {timeout:g} s") from None
        assert event is not None, "the feed closed the stream"
        if event.type == kind and event.id == approval_id:
            return event


async def _failed_tasks(handle: WorkflowHandle) -> list[Any]:
    return [
        event
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_a_signal_decision_reaches_the_feed_without_rereading_the_waiting_runs(
    client: Client, task_queue: str, waiting_worker: Worker
) -> None:
    handles = await _start_waiting(client, task_queue, MANY)
    [two] = await _start_waiting(client, task_queue, 1, quorum=2)
    handles.append(two)
    reviews = Reviews(client)
    feed = EventFeed(reviews, interval=0.2, linger=0)
    queue = feed.subscribe()
    try:
        await asyncio.wait_for(feed.ready.wait(), 60)
        assert feed.polls["full"] == 1 and feed.memos_read >= MANY
        # A few polls of what changed: the runs just started are in its window, unread.
        while feed.polls["changes"] < 3:
            await asyncio.sleep(0.05)
        full, read = feed.polls["full"], feed.memos_read

        decided = handles[7]
        approval_id = await _pending_id(decided)
        await decided.signal(contract.SIGNAL_APPROVE, decision(approval_id))
        event = await _next(queue, "approval.decided", approval_id, timeout=20)
        assert event.status is not None and event.status.value == "approved"
        assert event.reviewer == "alice"
        assert feed.polls["full"] == full, "a full listing found it, not the poll of changes"
        # At most the decided run's memo (none if the poll saw it ended), not the others'.
        assert feed.memos_read - read <= 2, feed.memos_read - read

        # A vote toward a quorum changes the memo alone: stamped too, and said.
        voted = await _pending_id(two)
        read = feed.memos_read
        await two.signal(contract.SIGNAL_APPROVE, decision(voted, reviewer="bob"))
        event = await _next(queue, "approval.updated", voted, timeout=20)
        assert event.approval is not None and event.approval.votes == 1
        assert feed.polls["full"] == full and feed.memos_read - read == 1

        # A run ended without its gate saying so: its approval leaves the feed.
        ended = handles[11]
        lost = await _pending_id(ended)
        read = feed.memos_read
        await ended.terminate("the agent misbehaved")
        event = await _next(queue, "approval.decided", lost, timeout=20)
        assert event.reason is not None and "terminated" in event.reason, event
        assert feed.polls["full"] == full
        assert feed.memos_read - read <= 1
        assert lost not in (feed._known or {})

        # The run that was decided stamped each change, and replays as it ran.
        history = await decided.fetch_history()
        assert any(
            PATCH_UPDATED_AT.encode() in e.SerializeToString()
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        )
        described = await decided.describe()
        assert described.typed_search_attributes.get(contract.UPDATED_AT_KEY) is not None
        await assert_replays(decided, [WaitingWorkflow])
    finally:
        feed.unsubscribe(queue)
        for handle in handles:
            try:
                await handle.terminate("test over")
            except Exception:
                pass


async def test_an_approval_carried_across_continue_as_new_stays_in_the_feed(
    client: Client, task_queue: str, waiting_worker: Worker
) -> None:
    handle = await client.start_workflow(
        CarryingWorkflow.run,
        Carry(customer="ACME"),
        id=f"carry-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=ApprovalOutcome,
    )
    approval_id = await _pending_id(handle)
    # Listed as waiting before the feed starts, so its first listing holds it.
    query = f"WorkflowId = '{handle.id}' AND {contract.PENDING_KEY.name} > 0"
    for _ in range(200):
        if (await client.count_workflows(query)).count:
            break
        await asyncio.sleep(0.05)
    feed = EventFeed(Reviews(client), interval=0.2, linger=0)
    queue = feed.subscribe()
    try:
        await asyncio.wait_for(feed.ready.wait(), 30)
        assert approval_id in (feed._known or {})
        full = feed.polls["full"]
        first_run = (await handle.describe()).run_id
        await handle.signal(CarryingWorkflow.move)
        for _ in range(200):
            if (await handle.describe()).run_id != first_run:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run did not continue as new")
        # Polls see the old run end and the new one stamp: the approval is still pending.
        changes = feed.polls["changes"]
        while feed.polls["changes"] < changes + 5:
            await asyncio.sleep(0.05)
        assert approval_id in (feed._known or {}) and queue.empty(), queue.qsize()
        await handle.signal(contract.SIGNAL_APPROVE, decision(approval_id))
        event = await _next(queue, "approval.decided", approval_id, timeout=20)
        assert event.status is not None and event.status.value == "approved"
        assert feed.polls["full"] == full
        assert (await asyncio.wait_for(handle.result(), 20)).approved
    finally:
        feed.unsubscribe(queue)


@pytest.fixture(scope="module")
async def old_namespace() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server registered as before HitlUpdatedAt: the gate's first three only."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=[contract.STATE_KEY, contract.PENDING_KEY, contract.APPROVAL_IDS_KEY],
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    yield environment
    await environment.shutdown()


async def test_without_the_attribute_runs_work_and_the_feed_lists_everything(
    old_namespace: WorkflowEnvironment, task_queue: str
) -> None:
    client = old_namespace.client
    # A worker that may not register attributes (Temporal Cloud without an admin's key).
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[WaitingWorkflow],
        plugins=[HitlPlugin(register_search_attributes=False)],
    ):
        reviews = Reviews(client)
        feed = EventFeed(reviews, interval=0.2, linger=0)
        queue = feed.subscribe()
        try:
            # Nothing waits yet, so nothing says the runs don't stamp: the feed asks what
            # changed, and the namespace refuses the query.
            await asyncio.wait_for(feed.ready.wait(), 30)
            handles = await _start_waiting(client, task_queue, 5)
            approval_id = await _pending_id(handles[0])
            # Seen pending first: one decided before any listing showed it never was, here.
            await _next(queue, "approval.pending", approval_id, timeout=20)
            await handles[0].signal(contract.SIGNAL_APPROVE, decision(approval_id))
            event = await _next(queue, "approval.decided", approval_id, timeout=20)
            assert event.status is not None and event.status.value == "approved"
            outcome = await handles[0].result()
            assert outcome.approved
            # Every poll was a full listing: the namespace can't say what changed.
            assert not feed._changes_listed and feed.polls["changes"] == 1
            assert feed.polls["full"] >= 3
        finally:
            feed.unsubscribe(queue)
        for handle in handles:
            assert await _failed_tasks(handle) == []
            described = await handle.describe()
            assert described.typed_search_attributes.get(contract.UPDATED_AT_KEY) is None
            assert described.typed_search_attributes.get(contract.STATE_KEY) is not None
        await assert_replays(handles[0], [WaitingWorkflow])

    # The attribute registered later (by a worker that may), while runs wait: they go on as
    # they started, replayed on every task, and only new runs stamp their changes.
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[WaitingWorkflow],
        plugins=[HitlPlugin()],
        max_cached_workflows=0,
    ):
        # The worker registers it as it starts, before it takes a task.
        for _ in range(100):
            if contract.UPDATED_AT_KEY.name not in await missing_search_attributes(client):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the worker did not register HitlUpdatedAt")
        older = handles[1]
        await older.signal(contract.SIGNAL_APPROVE, decision(await _pending_id(older)))
        assert (await asyncio.wait_for(older.result(), 30)).approved
        assert await _failed_tasks(older) == []
        described = await older.describe()
        assert described.typed_search_attributes.get(contract.UPDATED_AT_KEY) is None
        [newer] = await _start_waiting(client, task_queue, 1)
        await newer.signal(contract.SIGNAL_REJECT, decision(await _pending_id(newer)))
        assert not (await asyncio.wait_for(newer.result(), 30)).approved
        assert await _failed_tasks(newer) == []
        described = await newer.describe()
        assert described.typed_search_attributes.get(contract.UPDATED_AT_KEY) is not None
        for handle in handles[2:]:
            await handle.terminate("test over")
