"""The event feed behind /events: one poller of the pending approvals for every subscriber.

Visibility (the memo's pending summaries) is read as `hitl pending` reads it, every half
second while anyone listens; what changed is put on each subscriber's queue as an
`ApprovalEvent`. The route (`hitl.api.routers.events`) writes them as server-sent events.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from temporalio.service import RPCError

from hitl import policy
from hitl.api.schemas import ApprovalEvent
from hitl.models import ApprovalRecord, ApprovalStatus, PendingApproval
from hitl.reviews import ReviewError, Reviews

log = logging.getLogger("hitl.api")

POLL_SECONDS = 0.5
EVENT_QUEUE = 10_000
"""Events a slow /events subscriber may fall behind by before its stream is closed."""
READ_CONCURRENCY = 8
ANNOUNCED_SECONDS = 120.0


class EventFeed:
    """One poller for every /events subscriber: the pending set, diffed every half second.

    Visibility (the memo's pending summaries) is read as `hitl pending` reads it; an
    approval that left the set is read from its run to say how it ended. Polling starts
    with the first subscriber and stops with the last. A `ready` event tells a
    subscriber from when on changes are reported (a client reloads its listing then).
    A decision made through this API is announced as soon as the run confirms it,
    without waiting for a poll.
    """

    def __init__(self, reviews: Reviews, interval: float = POLL_SECONDS) -> None:
        self.reviews = reviews
        self.interval = interval
        self.ready = asyncio.Event()
        self._subscribers: set[asyncio.Queue[ApprovalEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._known: dict[str, PendingApproval] | None = None
        self._announced: dict[str, float] = {}
        """Approvals announced as ended, and when: a listing begun before the decision may
        still show them pending, and must not announce them again."""

    def announce(self, record: ApprovalRecord) -> None:
        """An approval this API saw end: said now, and not again by the poller."""
        if not self._subscribers or record.status is ApprovalStatus.PENDING:
            return
        if self._known is not None:
            self._known.pop(record.id, None)
        self._finish(record.summary(), record, datetime.now(UTC))

    def _finish(self, item: PendingApproval, record: ApprovalRecord, at: datetime) -> None:
        """Say how an approval ended, once, whichever of the API and the poller sees it first."""
        now = asyncio.get_running_loop().time()
        self._announced = {
            approval_id: when
            for approval_id, when in self._announced.items()
            if now - when < ANNOUNCED_SECONDS
        }
        if item.id not in self._announced:
            self._announced[item.id] = now
            self._emit(_ended(item, record, at))

    def subscribe(self) -> asyncio.Queue[ApprovalEvent | None]:
        queue: asyncio.Queue[ApprovalEvent | None] = asyncio.Queue(EVENT_QUEUE)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ApprovalEvent | None]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task, self._known = None, None
            self.ready.clear()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self._subscribers):
            self._drop(queue)
        if self._task is not None:
            self._task.cancel()

    def _drop(self, queue: asyncio.Queue[ApprovalEvent | None]) -> None:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    def _emit(self, event: ApprovalEvent) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # Too far behind to catch up: its stream ends, and the client reloads.
                self._drop(queue)

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                current = {item.id: item for item in await self.reviews.pending()}
                if self._known is not None:
                    current = await self._diff(self._known, current)
                self._known = current
                self.ready.set()
            except Exception:
                # Whatever one listing hit, the next may not: a poller that died would
                # leave every subscriber waiting on a stream that says nothing.
                log.exception("events: the pending approvals could not be listed")
            # A listing reads every pending approval, so it costs more the more wait (about
            # 5 s of this process's CPU over 10,000, docs/benchmarks.md). The pause after
            # one is at least as long as the listing took: the feed never takes more than
            # half of a core from the decisions it serves, and events come later instead.
            took = loop.time() - began
            await asyncio.sleep(max(self.interval - took, took))

    async def _diff(
        self, known: dict[str, PendingApproval], current: dict[str, PendingApproval]
    ) -> dict[str, PendingApproval]:
        now = datetime.now(UTC)
        current = {k: v for k, v in current.items() if k not in self._announced}
        for approval_id, item in current.items():
            before = known.get(approval_id)
            if before is None:
                self._emit(_event("approval.pending", item, now, approval=item))
            elif (before.votes, before.action_digest) != (item.votes, item.action_digest):
                self._emit(_event("approval.updated", item, now, approval=item))
        gone = [item for approval_id, item in known.items() if approval_id not in current]
        runs: dict[str, list[PendingApproval]] = {}
        for item in gone:
            runs.setdefault(item.session_id, []).append(item)
        limit = asyncio.Semaphore(READ_CONCURRENCY)

        async def ended(workflow_id: str, items: list[PendingApproval]) -> list[PendingApproval]:
            """How each approval of one run ended; those still pending are kept."""
            async with limit:
                try:
                    records = {r.id: r for r in await self.reviews.approvals_of(workflow_id)}
                    problem = None
                except (ReviewError, RPCError, ValidationError) as error:
                    records, problem = {}, str(error)
            kept = []
            for item in items:
                record = records.get(item.id)
                if record is not None and record.status is ApprovalStatus.PENDING:
                    # Visibility lags a continue-as-new: the new run carries it, still pending.
                    kept.append(item)
                    continue
                if record is None:
                    reason = f"no longer pending; its record could not be read ({problem})"
                    self._emit(_event("approval.decided", item, now, reason=reason))
                    continue
                self._finish(item, record, now)
            return kept

        carried = await asyncio.gather(*(ended(wf, items) for wf, items in runs.items()))
        return {**current, **{item.id: item for items in carried for item in items}}


def _event(kind: str, item: PendingApproval, at: datetime, **fields: Any) -> ApprovalEvent:
    return ApprovalEvent.model_validate(
        {"type": kind, "id": item.id, "session_id": item.session_id, "tool": item.tool, "at": at}
        | fields
    )


def _ended(item: PendingApproval, record: ApprovalRecord, at: datetime) -> ApprovalEvent:
    timed_out = record.reviewer == policy.TIMEOUT_REVIEWER
    return _event(
        "approval.timed_out" if timed_out else "approval.decided",
        item,
        at,
        status=record.status,
        reviewer=record.reviewer,
        reviewed_at=record.reviewed_at,
        reason=record.reason,
    )
