"""The event feed behind /events: one poller of the pending approvals for every subscriber.

Visibility (the memo's pending summaries) is read as `hitl pending` reads it; what changed
is put on each subscriber's queue as an `ApprovalEvent`. The route
(`hitl.api.routers.events`) writes them as server-sent events.

A poll costs what changed, not what waits: every half second the feed lists only the runs
whose gate stamped a change (`HitlUpdatedAt`, on the server's clock) since a little before
the newest stamp it has seen, and those that ended meanwhile, and decodes the memos of
those whose pending summaries differ from what it read last. A full listing at start and
every minute catches what that missed (a run listed late by visibility); runs that don't
stamp (from workers before HitlUpdatedAt, or a namespace without it) are read by full
listings only, as often as they cost (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract, policy
from hitl.api.schemas import ApprovalEvent
from hitl.models import ApprovalRecord, ApprovalStatus, PendingApproval
from hitl.reviews import ListedRun, ReviewError, Reviews

log = logging.getLogger("hitl.api")

POLL_SECONDS = 0.5
EVENT_QUEUE = 10_000
"""Events a slow /events subscriber may fall behind by before its stream is closed."""
READ_CONCURRENCY = 8
ANNOUNCED_SECONDS = 120.0
LINGER_SECONDS = 120.0
"""How long the feed keeps polling after its last subscriber left (cheap polls of what
changed), so a page loaded again finds the pending set current."""
SNAPSHOT_WAIT_SECONDS = 30.0
"""How long a sorted listing waits for the feed's first listing (10,000 pending: ~6 s)."""
FULL_LISTING_SECONDS = 60.0
"""How often the whole pending set is listed again while every run in it stamps its changes."""
MARGIN = timedelta(seconds=30)
"""How far before the newest stamp seen a poll looks again. A stamp is the time its workflow
task started; visibility lists the change after the task completes (a task may take up to
its 10 s timeout) and after the store indexes it (about a second on Elasticsearch)."""
CLOCK_MARGIN = timedelta(minutes=5)
"""Before the feed has seen any stamp on the server's clock, it looks back this far on its
own: the two clocks may disagree."""


class EventFeed:
    """One poller for every /events subscriber: the pending set, kept current every half second.

    Visibility (the memo's pending summaries) is read as `hitl pending` reads it, one full
    listing when polling starts and then only the runs that changed (see the module); an
    approval that left the set is read from its run to say how it ended. Polling starts
    with the first subscriber and stops `linger` seconds after the last one left. A
    `ready` event tells a subscriber from when on changes are reported (a client reloads
    its listing then).
    A decision made through this API is announced as soon as the run confirms it,
    without waiting for a poll.
    """

    def __init__(
        self, reviews: Reviews, interval: float = POLL_SECONDS, linger: float = LINGER_SECONDS
    ) -> None:
        self.reviews = reviews
        self.interval = interval
        self.linger = linger
        """How long polling goes on after the last subscriber left."""
        self._stopping: asyncio.TimerHandle | None = None
        self.ready = asyncio.Event()
        self._subscribers: set[asyncio.Queue[ApprovalEvent | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._known: dict[str, PendingApproval] | None = None
        self._announced: dict[str, float] = {}
        """Approvals announced as ended, and when: a listing begun before the decision may
        still show them pending, and must not announce them again."""
        self._runs: dict[str, dict[str, tuple[bytes | None, list[PendingApproval]]]] = {}
        """By workflow id, its running runs as last read: the memo's pending field as
        stored (so an unchanged one is not decoded again) and what it held."""
        self._ended: dict[str, datetime] = {}
        """Runs seen ended (by run id, with when), so a poll looks at each once."""
        self._cursor: datetime | None = None
        """The newest stamp or end seen, on the server's clock."""
        self._full_due = 0.0
        self._changes_listed = True
        """False once the namespace refused the query by HitlUpdatedAt (not registered)."""
        self.polls = {"full": 0, "changes": 0}
        self.rows_listed = 0
        """Visibility rows read, all told."""
        self.memos_read = 0
        """Memos decoded, all told: what a poll costs besides listing."""

    async def snapshot(self, wait: float = SNAPSHOT_WAIT_SECONDS) -> list[PendingApproval] | None:
        """The pending set as the feed holds it now (at most a poll behind visibility), or
        None when it isn't polling: a sorted listing then needs no listing of its own. A
        client that reads it after `ready` hears of every later change as an event. While
        the feed's first listing is under way, waits up to `wait` seconds for it rather
        than listing every run a second time beside it."""
        if self._task is None or self._task.done():
            return None
        if not self.ready.is_set():
            try:
                await asyncio.wait_for(self.ready.wait(), wait)
            except TimeoutError:
                return None
        if self._known is None:
            return None
        return list(self._known.values())

    def announce(self, record: ApprovalRecord) -> None:
        """An approval this API saw end: said now, and not again by the poller; gone at
        once from the pending set, for listings sorted from it (also while the feed polls
        on after its last subscriber left)."""
        if self._task is None or record.status is ApprovalStatus.PENDING:
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
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ApprovalEvent | None]) -> None:
        self._subscribers.discard(queue)
        if not self._subscribers and self._task is not None and self._stopping is None:
            # A reload, or a step from the inbox to its Insights page and back, comes
            # back within seconds: polling goes on a while, so the page finds the
            # pending set current instead of waiting for a full listing (seconds at
            # 10,000 pending).
            self._stopping = asyncio.get_running_loop().call_later(self.linger, self._stop)

    def _stop(self) -> None:
        self._stopping = None
        if self._subscribers or self._task is None:
            return
        self._task.cancel()
        self._task, self._known = None, None
        self._runs, self._ended, self._cursor = {}, {}, None
        self._changes_listed = True
        self.ready.clear()

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self._subscribers):
            self._drop(queue)
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
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
            full = False
            try:
                if self._known is None or began >= self._full_due or not await self._changes():
                    full = True
                    await self._full()
                self.ready.set()
            except Exception:
                # Whatever one listing hit, the next may not: a poller that died would
                # leave every subscriber waiting on a stream that says nothing. A poll cut
                # short may have read runs it did not diff: the next lists everything.
                self._full_due = 0.0
                log.exception("events: the pending approvals could not be listed")
            # A full listing reads every pending approval, so it costs more the more wait
            # (seconds of this process's CPU over 10,000, docs/benchmarks.md). Where polls
            # list everything each time, the pause after one is at least as long as it
            # took: the feed never takes more than half of a core from the decisions it
            # serves, and events come later instead. A full listing once a minute between
            # polls of what changed costs little, and the next poll need not wait for it.
            took = loop.time() - began
            rare = full and self._full_due > loop.time() + self.interval
            await asyncio.sleep(max(self.interval - took, 0.0 if rare else took))

    async def _full(self) -> None:
        """Every pending approval, listed again; only memos that changed are decoded."""
        self.polls["full"] += 1
        runs: dict[str, dict[str, tuple[bytes | None, list[PendingApproval]]]] = {}
        unstamped = 0
        async for run in self.reviews.pending_runs():
            self.rows_listed += 1
            if run.updated_at is None:
                unstamped += 1
            else:
                self._advance(run.updated_at)
            runs.setdefault(run.workflow_id, {})[run.run_id] = await self._read(run)
        self._runs = runs
        current = {
            item.id: item for run in runs.values() for _, items in run.values() for item in items
        }
        self._known = current if self._known is None else await self._diff(self._known, current)
        # A run that doesn't stamp its changes is seen by full listings only: list as often
        # as that costs, as before stamps.
        every = FULL_LISTING_SECONDS if self._changes_listed and not unstamped else 0.0
        self._full_due = asyncio.get_running_loop().time() + every

    async def _changes(self) -> bool:
        """The runs changed since a little before the newest change seen, diffed; False if
        the namespace can't say (HitlUpdatedAt not registered): a full listing then."""
        if not self._changes_listed:
            return False
        assert self._known is not None
        self.polls["changes"] += 1
        cursor = self._cursor or datetime.now(UTC) - CLOCK_MARGIN
        since = cursor - MARGIN
        touched: set[str] = set()
        try:
            async for run in self.reviews.pending_runs(changed_since=since):
                self.rows_listed += 1
                if run.updated_at is not None:
                    self._advance(run.updated_at)
                if run.running:
                    before = self._runs.get(run.workflow_id, {}).get(run.run_id)
                    read = await self._read(run, before)
                    if read is not before:
                        self._runs.setdefault(run.workflow_id, {})[run.run_id] = read
                        touched.add(run.workflow_id)
                    continue
                closed = run.closed_at or cursor
                self._advance(closed)
                if run.run_id in self._ended:
                    continue
                # Ended without its gate saying so (terminated, timed out), or continued as
                # new: its approvals ended with it, or went on in the next run.
                self._ended[run.run_id] = closed
                if self._runs.get(run.workflow_id, {}).pop(run.run_id, None) is not None:
                    touched.add(run.workflow_id)
        except RPCError as error:
            if error.status is not RPCStatusCode.INVALID_ARGUMENT:
                raise
            log.warning(
                "events: the namespace has no %s search attribute; the feed lists every "
                "pending approval each time (%s)",
                contract.UPDATED_AT_KEY.name,
                error.message,
            )
            self._changes_listed = False
            return False
        forget = since - MARGIN
        self._ended = {run: when for run, when in self._ended.items() if when >= forget}
        if touched:
            known = {k: v for k, v in self._known.items() if v.session_id in touched}
            current = {
                item.id: item
                for workflow_id in touched
                for _, items in self._runs.get(workflow_id, {}).values()
                for item in items
            }
            for workflow_id in touched:
                if not self._runs.get(workflow_id):
                    self._runs.pop(workflow_id, None)
            kept = await self._diff(known, current)
            untouched = {k: v for k, v in self._known.items() if v.session_id not in touched}
            self._known = {**untouched, **kept}
        return True

    def _advance(self, at: datetime) -> None:
        if self._cursor is None or at > self._cursor:
            self._cursor = at

    async def _read(
        self, run: ListedRun, before: tuple[bytes | None, list[PendingApproval]] | None = None
    ) -> tuple[bytes | None, list[PendingApproval]]:
        """What a run holds pending: `before` again if its memo's pending field is unchanged,
        else decoded. A full listing reuses what it read of the same run."""
        if before is None:
            before = self._runs.get(run.workflow_id, {}).get(run.run_id)
        if before is not None and before[0] == run.stored:
            return before
        self.memos_read += 1
        return run.stored, await run.pending()

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
            status = None
            async with limit:
                try:
                    handle = self.reviews.client.get_workflow_handle(workflow_id)
                    status = (await handle.describe()).status
                    records = {
                        r.id: r for r in await self.reviews.approvals_of(workflow_id, status=status)
                    }
                    problem = None
                except (ReviewError, RPCError, ValidationError) as error:
                    records, problem = {}, str(error)
            kept = []
            for item in items:
                record = records.get(item.id)
                if record is not None and record.status is ApprovalStatus.PENDING:
                    if status is WorkflowExecutionStatus.RUNNING:
                        # Visibility lags a continue-as-new: the new run carries it, pending.
                        kept.append(item)
                        continue
                    # Terminated, timed out, failed: nobody can decide it any more.
                    name = status.name.lower() if status is not None else "unknown"
                    reason = f"its run ended ({name}) while it was pending"
                    self._emit(_event("approval.decided", item, now, reason=reason))
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
