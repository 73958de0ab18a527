"""The reviewer's side, one library: find approvals, decide them, confirm, audit.

Everything a reviewer's interface does goes through `Reviews`, over a Temporal client:
the `hitl` CLI, the starter's inline review and the benchmarks. It works for any
workflow that uses the gate (`hitl.gate.ApprovalGate`), not only `AgentWorkflow`, and
across a run's continue-as-new chain.

- Listing reads visibility only (search attributes and memo), never each run.
- An approval is found with one visibility query (`HitlApprovalIds`).
- A decision is sent first and confirmed after: it needs no query to go out, so a busy
  worker can delay the confirmation, not the decision. It goes to the workflow id (the
  latest run of the chain), and is confirmed from the run's decision log.
- A decision goes out once: as the `decide` update, or as a signal when Temporal does not
  hold the update (the run refuses a second copy of a decision, and says so in its log).
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
from temporalio.api.enums.v1 import TaskQueueType, UpdateWorkflowExecutionLifecycleStage
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.update.v1 import Outcome as UpdateOutcome
from temporalio.api.update.v1 import UpdateRef, WaitPolicy
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    PollWorkflowExecutionUpdateRequest,
    PollWorkflowExecutionUpdateResponse,
)
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.converter import WorkflowSerializationContext
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract
from hitl.decisions import AnyDecision, Receipt, RefusalCode, current_digest
from hitl.models import (
    ApprovalRecord,
    DecisionEntry,
    GateStatus,
    PendingApproval,
    RefusedDecision,
    RunResult,
    payload_digest,
)
from hitl.reviewers import sign
from hitl.reviewers import signer as own_signer
from hitl.text import quoted

LIST_PAGE_SIZE = 5000
PAGE_SIZE = 50
MAX_PAGES_SCANNED = 20
"""A filtered page stops looking after this many visibility pages, and says where it got."""
CONFIRM_SECONDS = 5.0
"""How long a decision waits for the run's verdict, all told, before it is reported as
sent but not confirmed."""
HELD_SECONDS = 0.5
"""Of that, what is kept for asking Temporal whether it holds an update no worker took yet."""
SLICE_SECONDS = 1.0
"""One query or poll while confirming: one stuck on a worker that died must not use up
the whole wait, or a verdict that came meanwhile is missed."""
SETTLE_SECONDS = 15.0
"""How much longer `confirm` may wait while a worker polls the run's task queue (one that
restarts after a crash takes the run over after about 10 s, Temporal's sticky timeout)."""
POLLER_SEEN_SECONDS = 90.0
"""A worker polls again at least every minute: one not seen for longer has gone."""
BULK_CONFIRM_SECONDS_EACH = 0.05
QUERY_TIMEOUT = timedelta(seconds=10)
REQUEST_QUERY_TIMEOUT = timedelta(seconds=2)
"""A listing asks a run without a title for its request this long at most."""
READ_CONCURRENCY = 8
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
SIGNALS = {
    "approve": contract.SIGNAL_APPROVE,
    "reject": contract.SIGNAL_REJECT,
    "modify": contract.SIGNAL_MODIFY,
    "revoke": contract.SIGNAL_REVOKE,
}


class ReviewError(Exception):
    """Something a reviewer asked for that can't be done, in one sentence."""

    code: str | None = None
    """Its `RefusalCode`, for interfaces that answer with one (None: not a refusal)."""


class NotAnApprovalId(ReviewError):
    code = RefusalCode.MALFORMED


class ApprovalNotFound(ReviewError):
    code = RefusalCode.NOT_FOUND


class RunNotFound(ReviewError):
    code = RefusalCode.NOT_FOUND


class DecisionRejected(ReviewError):
    """The run refused a decision it could not read, before it reached history."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # from the failure's type (None from workers before codes)


class RecordUnavailable(ReviewError):
    """The run has ended and its records can only be read by replaying it on a worker."""

    code = RefusalCode.RUN_ENDED


@dataclass(frozen=True)
class Located:
    """Where an approval lives: its run, and (while pending) the memo's summary of it."""

    approval_id: str
    workflow_id: str
    run_id: str
    status: WorkflowExecutionStatus | None
    summary: PendingApproval | None = None

    @property
    def running(self) -> bool:
        return self.status is WorkflowExecutionStatus.RUNNING


@dataclass
class Outcome:
    """What became of a decision: the run's log entry, or why there is none."""

    approval_id: str
    workflow_id: str
    decision: AnyDecision
    entry: DecisionEntry | None = None
    """None: sent, but the run did not confirm it in time (no worker, or a busy one)."""
    record: ApprovalRecord | None = None
    ended: bool = False
    """The run had ended before the decision could be sent; `record` says how it was decided."""
    rejected: str | None = None
    """The run refused to take the decision at all (malformed, or naming nothing here)."""
    code: str | None = None
    """`RefusalCode` of `rejected`, or of the entry when it was refused."""
    held: bool = False
    """Sent as an update that Temporal holds until a worker takes it (not sent again as a
    signal: the run would refuse the second copy into its decision log)."""
    no_worker: str | None = None
    """Set by `confirm`: the task queue of the run, when no worker polls it."""
    payload: dict[str, Any] | None = field(default=None, repr=False)
    """The decision as it was sent (signed): its entry is the one with this payload."""

    @property
    def applied(self) -> bool:
        return self.entry is not None and self.entry.outcome == "applied"

    @property
    def refusal_code(self) -> str | None:
        """Why the run refused the decision, as a `RefusalCode` (None: applied, unconfirmed,
        or refused by a worker from before codes)."""
        if self.entry is not None and self.entry.outcome == "refused":
            return self.entry.code
        return self.code

    @property
    def what(self) -> str:
        """The action, in a few words, for a report."""
        if self.record is not None:
            return f"{self.record.action_json.tool}: {self.record.preview.summary}"
        return ""


@dataclass(frozen=True)
class ListedRun:
    """One run as a listing of pending approvals sees it, its memo not decoded yet."""

    workflow_id: str
    run_id: str
    running: bool
    updated_at: datetime | None
    """`HitlUpdatedAt`: when its gate last published a change (None: the run doesn't stamp)."""
    closed_at: datetime | None
    stored: bytes | None
    """The memo's pending field as stored: a gate rewrites it only when it changes, so the
    same bytes hold the same approvals."""
    read: Callable[[], Awaitable[list[PendingApproval]]] = field(repr=False, compare=False)

    async def pending(self) -> list[PendingApproval]:
        """Its pending approvals, decoded from the memo (none that this process can't)."""
        return await self.read()


@dataclass
class Page:
    """One page of a listing, and where the next one starts (None: this was the last)."""

    items: list[PendingApproval]
    next_page_token: bytes | None = None


SORTS = ("expires_at", "risk")
"""What a sorted listing (`Reviews.pending_sorted`) may be sorted by."""


@dataclass(frozen=True)
class PendingFilter:
    """Which pending approvals a listing shows: every condition given must hold."""

    tool: str | None = None
    run: str | None = None
    """A workflow id."""
    requester: str | None = None
    """Who asked for the run (`requested_by`)."""
    risk_min: int | None = None
    risk_max: int | None = None
    expires_within: timedelta | None = None
    """Expiring at most this long from now (already expired ones included)."""

    def matches(self, item: PendingApproval, now: datetime | None = None) -> bool:
        if self.tool is not None and item.tool != self.tool:
            return False
        if self.run is not None and item.session_id != self.run:
            return False
        if self.requester is not None and item.requested_by != self.requester:
            return False
        if self.risk_min is not None and item.risk < self.risk_min:
            return False
        if self.risk_max is not None and item.risk > self.risk_max:
            return False
        if self.expires_within is not None:
            return item.expires_at <= (now or datetime.now(UTC)) + self.expires_within
        return True


def sort_key(item: PendingApproval, sort: str, descending: bool = False) -> list[Any]:
    """Where an approval falls in a sorted listing, as JSON-able values (a page token
    holds the last one shown): by `sort`, then the soonest expiry, then the id."""
    expires = item.expires_at.timestamp()
    if sort == "expires_at":
        return [-expires if descending else expires, item.id]
    if sort == "risk":
        return [-item.risk if descending else item.risk, expires, item.id]
    raise ReviewError(f"{quoted(sort)} is not a sort order; one of {', '.join(SORTS)}")


@dataclass
class Audit:
    """Every approval of a workflow id, across its runs, with every decision."""

    workflow_id: str
    status: str
    runs: list[str] = field(default_factory=list)
    approvals: list[ApprovalRecord] = field(default_factory=list)
    refused: list[RefusedDecision] = field(default_factory=list)


def check_id(approval_id: str) -> str:
    if not _ID.match(approval_id):
        raise NotAnApprovalId(
            f"{quoted(approval_id)} is not an approval id (they look like apr_1a2b…)"
        )
    return approval_id


def with_decision_id(decision: AnyDecision) -> AnyDecision:
    if decision.decision_id is not None:
        return decision
    return decision.model_copy(update={"decision_id": f"dec_{uuid.uuid4().hex[:12]}"})


class Reviews:
    def __init__(
        self,
        client: Client,
        confirm_seconds: float = CONFIRM_SECONDS,
        signer: tuple[str, bytes] | bool | None = True,
    ) -> None:
        """`signer`: (issuer, key) to sign decisions with; True: this process's own
        (`HITL_SIGNER`, `HITL_SIGNING_KEY`), if any; None or False: never sign."""
        self.client = client
        self.confirm_seconds = confirm_seconds
        self.signer = own_signer() if signer is True else (signer or None)

    # --- listing --------------------------------------------------------------------------

    async def pending(
        self,
        tool: str | None = None,
        run: str | None = None,
        where: Callable[[PendingApproval], bool] | None = None,
    ) -> list[PendingApproval]:
        """Every pending approval of every running workflow (or of the workflow id `run`),
        oldest first, from visibility; only those `where` holds for, if given."""
        found: list[PendingApproval] = []
        async for listed in self.pending_runs(run=run):
            found.extend(
                item
                for item in await listed.pending()
                if (tool is None or item.tool == tool) and (where is None or where(item))
            )
        found.sort(key=lambda item: item.created_at)
        return found

    async def pending_sorted(
        self,
        sort: str,
        descending: bool = False,
        limit: int = PAGE_SIZE,
        after: Sequence[Any] | None = None,
        run: str | None = None,
        where: Callable[[PendingApproval], bool] | None = None,
    ) -> tuple[list[PendingApproval], list[Any] | None]:
        """One page of pending approvals in `sort` order (`sort_page`), and the key to pass
        as `after` for the next page (None: this was the last).

        Sorting needs every pending approval: this reads them all (`pending`), so its
        cost grows with how many wait, unlike `pending_page`; a process that keeps the
        pending set current (the API's event feed) sorts what it holds with `sort_page`.
        """
        if limit < 1:
            raise ReviewError("a page holds at least one approval (limit >= 1)")
        return sort_page(await self.pending(run=run, where=where), sort, descending, limit, after)

    async def pending_runs(
        self, changed_since: datetime | None = None, run: str | None = None
    ) -> AsyncIterator[ListedRun]:
        """The runs a listing of pending approvals reads, as visibility lists them: each
        memo is decoded by who needs it (`ListedRun.pending`).

        Without `changed_since`: every running run with approvals pending (of the
        workflow id `run`, if given). With it: every
        run whose gate published a change at or after that time (`HitlUpdatedAt`, set by
        the workflow, so on the server's clock), or that ended since then (terminated,
        timed out, continued as new), whatever it holds now. A namespace without
        HitlUpdatedAt refuses that query (`RPCError`, INVALID_ARGUMENT).
        """
        query = _pending_query(run)
        if changed_since is not None:
            at = _timestamp(changed_since)
            query = (
                f"{contract.STATE_KEY.name} IS NOT NULL AND "
                f"({contract.UPDATED_AT_KEY.name} >= '{at}' OR CloseTime >= '{at}')"
            )
        # Large pages: listing is bound by the server's visibility store, and every page is
        # a round trip.
        async for execution in self.client.list_workflows(query, page_size=LIST_PAGE_SIZE):
            memo = execution.raw_info.memo.fields.get(contract.MEMO_PENDING)
            yield ListedRun(
                workflow_id=execution.id,
                run_id=execution.run_id,
                running=execution.status is WorkflowExecutionStatus.RUNNING,
                updated_at=execution.typed_search_attributes.get(contract.UPDATED_AT_KEY),
                closed_at=execution.close_time,
                stored=memo.SerializeToString() if memo is not None else None,
                read=functools.partial(_pending_of, execution),
            )

    async def pending_page(
        self,
        limit: int = PAGE_SIZE,
        page_token: bytes | None = None,
        tool: str | None = None,
        run: str | None = None,
        where: Callable[[PendingApproval], bool] | None = None,
    ) -> Page:
        """One page of pending approvals, newest runs first, each run's oldest first.

        A page reads one visibility page of `limit` runs (each run's memo holds its
        pending summaries), so its cost does not grow with how many runs wait. It holds
        at most `limit` approvals and never splits a run between pages, so that the
        token, Temporal's own (a position after the last run shown), stays valid while
        runs are decided; a single run with more than `limit` pending approvals comes
        whole. With a `tool` filter (or `where`, a test of each approval) a page may come
        short of `limit` while more follow: follow `next_page_token` until it is None.
        """
        if limit < 1:
            raise ReviewError("a page holds at least one approval (limit >= 1)")
        query = _pending_query(run)

        def wanted(item: PendingApproval) -> bool:
            return (tool is None or item.tool == tool) and (where is None or where(item))

        items: list[PendingApproval] = []
        token = page_token
        for _ in range(MAX_PAGES_SCANNED):
            listing = self.client.list_workflows(query, page_size=limit, next_page_token=token)
            await listing.fetch_next_page()
            runs = [
                [item for item in await _pending_of(e) if wanted(item)]
                for e in listing.current_page or []
            ]
            taken, before = 0, len(items)
            for found in runs:
                if items and len(items) + len(found) > limit:
                    break
                items += found
                taken += 1
            if taken < len(runs):
                if taken == 0:
                    return Page(items, token)
                # Temporal's token points past the whole visibility page; for one that
                # points past the runs shown, ask again for exactly those runs (what they
                # hold now is what this page shows).
                exact = self.client.list_workflows(query, page_size=taken, next_page_token=token)
                await exact.fetch_next_page()
                items[before:] = [
                    item
                    for e in exact.current_page or []
                    for item in await _pending_of(e)
                    if wanted(item)
                ]
                return Page(items, exact.next_page_token)
            token = listing.next_page_token
            if token is None or len(items) >= limit:
                break
        return Page(items, token)

    async def runs(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Workflows that use the gate, newest first: state, pending count, start, task.

        `task` says what the run is about: the title the workflow gives (the memo's
        `hitl_task`: the agent's task, or what a workflow of your own passes as
        `ApprovalGate(memo=...)`), else the request of its first pending approval (its
        `context.original_request`, asked of the run), else that approval's summary.
        """
        query = f"{contract.STATE_KEY.name} IS NOT NULL"
        if state:
            if not _ID.match(state):
                raise ReviewError(
                    f"{quoted(state)} is not a state (running, awaiting_approval, ...)"
                )
            query = f"{contract.STATE_KEY.name} = '{state}'"
            if state in ("running", "awaiting_approval"):
                # A run that ended without its gate saying so (terminated, timed out, a
                # worker without the plugin) still has the state it last published.
                query += " AND ExecutionStatus = 'Running'"
        runs = []
        untitled: list[tuple[dict[str, Any], PendingApproval]] = []
        async for execution in self.client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            memo = await _memo_of(execution)
            status = execution.status.name.lower() if execution.status else "unknown"
            shown = attributes.get(contract.STATE_KEY) or status
            run = {
                "id": execution.id,
                "run_id": execution.run_id,
                "workflow_type": execution.workflow_type,
                "state": shown
                if status in ("running", shown) or shown in ("completed", "step_limit")
                else f"{status} ({shown})",
                "status": status,
                "pending": attributes.get(contract.PENDING_KEY) or 0,
                "started_at": execution.start_time,
                "task": UNREADABLE_MEMO
                if memo is None
                else str(memo.get(contract.MEMO_TASK) or ""),
            }
            runs.append(run)
            pending = await _pending_of(execution) if not run["task"] else []
            if pending:
                first = min(pending, key=lambda item: item.created_at)
                run["task"] = f"{first.tool}: {first.summary}"
                # An approval's words: shown only to who may read that tool's approvals.
                run["task_tool"] = first.tool
                if execution.status is WorkflowExecutionStatus.RUNNING:
                    untitled.append((run, first))
        limit_reads = asyncio.Semaphore(READ_CONCURRENCY)

        async def request_of(run: dict[str, Any], first: PendingApproval) -> None:
            async with limit_reads:
                handle = self.client.get_workflow_handle(run["id"], run_id=run["run_id"])
                try:
                    records: list[ApprovalRecord] = await handle.query(
                        contract.QUERY_APPROVALS,
                        result_type=list[ApprovalRecord],
                        rpc_timeout=REQUEST_QUERY_TIMEOUT,
                    )
                except (RPCError, ValidationError):
                    return  # no worker answers: the summary stays
            record = next((r for r in records if r.id == first.id), None)
            if record is not None and record.context.original_request:
                run["task"] = record.context.original_request

        await asyncio.gather(*(request_of(run, first) for run, first in untitled))
        return runs

    # --- one approval ---------------------------------------------------------------------

    async def locate(self, approval_id: str) -> Located:
        """The run that holds an approval: the running one if any, else the newest."""
        check_id(approval_id)
        query = f"{contract.APPROVAL_IDS_KEY.name} = '{approval_id}'"
        found = [execution async for execution in self.client.list_workflows(query, limit=50)]
        if not found:
            raise ApprovalNotFound(
                f"no run has an approval {approval_id}; `hitl pending` lists the pending ones"
            )
        found.sort(
            key=lambda e: (e.status is WorkflowExecutionStatus.RUNNING, e.start_time),
            reverse=True,
        )
        best = found[0]
        summary = next((item for item in await _pending_of(best) if item.id == approval_id), None)
        return Located(approval_id, best.id, best.run_id, best.status, summary)

    async def _record(
        self, approval_id: str, workflow_id: str, located: Located | None
    ) -> ApprovalRecord:
        """The approval's record from the run named (no visibility lookup: a run started a
        moment ago may not be listed yet), else from the run visibility finds."""
        if located is not None:
            return await self.get(approval_id)
        for record in await self.approvals_of(workflow_id):
            if record.id == approval_id:
                return record
        raise ApprovalNotFound(f"run {workflow_id} has no approval {approval_id}")

    async def get(self, approval_id: str) -> ApprovalRecord:
        """The approval's full record, from its run (a query, or a finished run's result)."""
        located = await self.locate(approval_id)
        for record in await self.approvals_of(located.workflow_id, located.run_id, located.status):
            if record.id == approval_id:
                return record
        raise ApprovalNotFound(f"run {located.workflow_id} no longer lists {approval_id}")

    async def approvals_of(
        self,
        workflow_id: str,
        run_id: str | None = None,
        status: WorkflowExecutionStatus | None = None,
    ) -> list[ApprovalRecord]:
        """The approval records of one run.

        A running run answers the `approvals` query. A completed agent run is read from its
        result, with no worker needed; any other ended run (continued as new, failed, or a
        workflow of your own) is queried, which Temporal answers by replaying it on a worker.
        """
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id)
        if status is None:
            try:
                status = (await handle.describe()).status
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND:
                    raise RunNotFound(f"no run {quoted(workflow_id)}") from error
                raise
        if status is WorkflowExecutionStatus.COMPLETED:
            result = await self._agent_result(workflow_id, run_id)
            if result is not None:
                return result.approvals
        try:
            records: list[ApprovalRecord] = await handle.query(
                contract.QUERY_APPROVALS,
                result_type=list[ApprovalRecord],
                rpc_timeout=QUERY_TIMEOUT,
            )
        except KeyError as error:
            raise _encrypted(workflow_id) from error
        except RPCError as error:
            if status is not WorkflowExecutionStatus.RUNNING and error.status in (
                RPCStatusCode.DEADLINE_EXCEEDED,
                RPCStatusCode.CANCELLED,
            ):
                raise RecordUnavailable(
                    f"run {workflow_id} has ended ({_status(status)}); its approvals are read by "
                    "replaying it, which needs a worker on its task queue (`hitl doctor`)"
                ) from error
            raise
        return records

    # --- deciding ---------------------------------------------------------------------------

    async def decide(
        self, decision: AnyDecision, workflow_id: str | None = None, via: str = "update"
    ) -> Outcome:
        """Send a decision and say what became of it, within `confirm_seconds`.

        `via="update"` (the default) sends it as the `decide` update (its id made of
        the approval's and the decision's): one round trip, the run's own verdict back,
        and malformed decisions kept out of history. When no worker takes it in time,
        the same decision also goes as a signal, which Temporal keeps durably until a
        worker runs the workflow (an update that no worker took lives only in the
        server's memory); the run takes whichever comes first and answers the other with
        the same entry, so the log holds it once. `via="signal"`
        sends a signal and confirms it from the decision log. Without `workflow_id` the
        approval's run is found through visibility first. When this process has a
        signing key (`HITL_SIGNING_KEY`), the decision is signed and bound to the exact
        action.
        """
        decision = with_decision_id(decision)
        approval_id = check_id(decision.approval_id)
        located = None
        if workflow_id is None:
            located = await self.locate(approval_id)
            workflow_id = located.workflow_id
        handle = self.client.get_workflow_handle(workflow_id)
        if self.signer is not None and decision.kind != "revoke" and not decision.action_digest:
            summary = located.summary if located else None
            # The memo's summary has the proposed action's digest; while a quorum counts,
            # a reviewer's modification may be the action now (`current_digest`).
            digest = summary.action_digest if summary and summary.quorum <= 1 else None
            if digest is None:
                digest = current_digest(await self._record(approval_id, workflow_id, located))
            decision = decision.model_copy(update={"action_digest": digest})
        return await self._send(handle, decision, self.payload(decision), via)

    async def forward(
        self, decision: AnyDecision, signed: dict[str, Any], workflow_id: str
    ) -> Outcome:
        """Send a decision exactly as its reviewer signed it (`signed`, which `decision`
        was validated from), neither re-signed nor changed: the worker checks the
        reviewer's own signature. The Redis bridge sends what reviewers publish this way;
        a bridge that signed as the API could be made to speak for anyone."""
        if decision.decision_id is None:
            raise ReviewError("a forwarded decision carries its decision_id")
        check_id(decision.approval_id)
        return await self._send(self.client.get_workflow_handle(workflow_id), decision, signed)

    async def _send(
        self,
        handle: WorkflowHandle,
        decision: AnyDecision,
        payload: dict[str, Any],
        via: str = "update",
    ) -> Outcome:
        approval_id, workflow_id = decision.approval_id, handle.id
        deadline = asyncio.get_running_loop().time() + self.confirm_seconds
        held = False
        try:
            if via == "update":
                receipt, held = await self._update(
                    handle, payload, _update_id(decision, payload), deadline
                )
                if receipt is not None and not _ours(receipt.entry, payload):
                    # Someone sent another payload first under this update's id (it can be
                    # computed from a decision seen on Redis): Temporal answered with theirs.
                    # The signal reaches the run, which judges this payload on its own.
                    receipt, held = None, False
                if receipt is not None:
                    return Outcome(
                        approval_id,
                        workflow_id,
                        decision,
                        entry=receipt.entry,
                        record=receipt.record,
                        held=held,
                        payload=payload,
                    )
            # Also when Temporal holds the update: an update no worker has taken lives only
            # in the server's memory, and a restart would lose it. The signal is durable;
            # the run answers the second copy with the first's entry and logs it once.
            await handle.signal(SIGNALS[decision.kind], payload)
            return await self._confirm(handle, decision, deadline, held=held, payload=payload)
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            return Outcome(
                approval_id, workflow_id, decision, record=await self.get(approval_id), ended=True
            )
        except DecisionRejected as rejected:
            return Outcome(
                approval_id, workflow_id, decision, rejected=str(rejected), code=rejected.code
            )

    async def confirm(self, outcome: Outcome, seconds: float = SETTLE_SECONDS) -> Outcome:
        """Wait up to `seconds` more for the verdict on a decision sent but not confirmed.

        Worth it only while a worker polls the run's task queue (one restarting after a
        crash, or a busy one): with none, it says so at once (`no_worker`).
        """
        if outcome.entry is not None or outcome.ended or outcome.rejected is not None:
            return outcome
        handle = self.client.get_workflow_handle(outcome.workflow_id)
        queue, polled = await self._worker_polls(handle)
        if not polled:
            outcome.no_worker = queue
            return outcome
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            confirmed = await self._confirm(
                handle, outcome.decision, deadline, held=outcome.held, payload=outcome.payload
            )
        except DecisionRejected as rejected:
            outcome.rejected, outcome.code = str(rejected), rejected.code
            return outcome
        confirmed.record = confirmed.record or outcome.record
        return confirmed

    def payload(self, decision: AnyDecision) -> dict[str, Any]:
        """The decision as it goes on the wire: signed when this process has a key."""
        payload = decision.model_dump(mode="json", exclude_none=True)
        for name in ("issuer", "issued_at", "signature"):
            payload.pop(name, None)
        if self.signer is not None:
            issuer, key = self.signer
            payload = sign(payload, issuer, key)
        return payload

    async def _update(
        self, handle: WorkflowHandle, payload: dict[str, Any], update_id: str, deadline: float
    ) -> tuple[Receipt | None, bool]:
        """The run's receipt for the decision, if it came in time; and whether Temporal
        holds the update (then it reaches the run with the next worker, and a signal would
        be a second copy)."""
        budget = max(0.1, deadline - asyncio.get_running_loop().time() - HELD_SECONDS)
        try:
            # The SDK bounds each call, not all of them: the bound is kept here.
            async with asyncio.timeout(budget):
                update = await handle.start_update(
                    contract.UPDATE_DECIDE,
                    payload,
                    id=update_id,
                    wait_for_stage=WorkflowUpdateStage.COMPLETED,
                    rpc_timeout=timedelta(seconds=budget),
                )
                return _receipt(await update.result()), True
        except WorkflowUpdateFailedError as error:
            return _refused_update(error.cause)
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            pass  # no worker took it in time: Temporal may hold it still
        except RPCError as error:
            if error.status in _DEFINITE:
                raise
            # The answer was lost on the way back (a worker or a connection that failed
            # mid-way): the update may have reached the run, even been applied.
        return await self._update_state(handle.id, update_id)

    async def _update_state(self, workflow_id: str, update_id: str) -> tuple[Receipt | None, bool]:
        """Whether Temporal holds the update, and its verdict if the run gave one."""
        try:
            answer = await self._poll_update(workflow_id, update_id, HELD_SECONDS)
        except RPCError:
            # Not found: it never reached the run. Anything else: unknown, and a decision
            # that might be lost is worse than a second copy the run refuses.
            return None, False
        if answer.HasField("outcome"):
            return await self._receipt_of(workflow_id, answer.outcome), True
        return None, True

    async def _poll_update(
        self, workflow_id: str, update_id: str, seconds: float
    ) -> PollWorkflowExecutionUpdateResponse:
        """Where an update stands now (waiting for the admitted stage answers at once, with
        the stage reached and the outcome, if any)."""
        return await self.client.workflow_service.poll_workflow_execution_update(
            PollWorkflowExecutionUpdateRequest(
                namespace=self.client.namespace,
                update_ref=UpdateRef(
                    workflow_execution=ExecutionRef(workflow_id=workflow_id), update_id=update_id
                ),
                identity=self.client.identity,
                wait_policy=WaitPolicy(
                    lifecycle_stage=(
                        UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED
                    )
                ),
            ),
            retry=False,
            timeout=timedelta(seconds=max(0.1, seconds)),
        )

    async def _receipt_of(self, workflow_id: str, outcome: UpdateOutcome) -> Receipt | None:
        converter = self.client.data_converter.with_context(
            WorkflowSerializationContext(namespace=self.client.namespace, workflow_id=workflow_id)
        )
        if outcome.HasField("failure"):
            receipt, _ = _refused_update(await converter.decode_failure(outcome.failure))
            return receipt
        [value] = await converter.decode(outcome.success.payloads)
        return _receipt(value)

    async def _worker_polls(self, handle: WorkflowHandle) -> tuple[str, bool]:
        """The run's task queue, and whether a worker has polled it lately."""
        try:
            description = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
        except RPCError:
            return "", True  # can't tell: wait, as if one did
        return description.task_queue, await self._queue_polled(description.task_queue)

    async def _queue_polled(self, task_queue: str) -> bool:
        """Whether a worker has polled this task queue lately (True when it can't tell)."""
        try:
            answer = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self.client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                ),
                timeout=QUERY_TIMEOUT,
            )
        except RPCError:
            return True
        return bool(polling_lately(answer.pollers))

    async def decide_many(
        self,
        items: Sequence[PendingApproval],
        build: Callable[[PendingApproval], AnyDecision],
        concurrency: int = 64,
    ) -> list[Outcome]:
        """Decide many pending approvals at once, then confirm each from its run's log.

        Every signal goes out before any confirmation is asked for, so the runs resume as
        fast as the server takes signals, not as fast as confirmations come back. The runs
        work through their decisions one after another, so the time allowed for
        confirmation grows with their number.
        """
        limit = asyncio.Semaphore(concurrency)
        wait = self.confirm_seconds + BULK_CONFIRM_SECONDS_EACH * len(items)

        async def send(item: PendingApproval) -> Outcome:
            decision = with_decision_id(build(item))
            if decision.kind != "revoke" and not decision.action_digest and item.action_digest:
                # Bound to the action as it was listed: if it changed since, the run refuses
                # it as stale instead of approving what the reviewer never saw (and a signed
                # decision must name its action, or a worker with keys refuses it).
                decision = decision.model_copy(update={"action_digest": item.action_digest})
            async with limit:
                try:
                    payload = await self._signal(
                        self.client.get_workflow_handle(item.session_id), decision
                    )
                except RPCError as error:
                    if error.status is not RPCStatusCode.NOT_FOUND:
                        raise
                    return Outcome(item.id, item.session_id, decision, ended=True)
            return Outcome(item.id, item.session_id, decision, payload=payload)

        async def confirm(sent: Outcome) -> Outcome:
            if sent.ended:
                return sent
            async with limit:
                handle = self.client.get_workflow_handle(sent.workflow_id)
                deadline = asyncio.get_running_loop().time() + wait
                return await self._confirm(handle, sent.decision, deadline, payload=sent.payload)

        sent = await asyncio.gather(*(send(item) for item in items))
        return list(await asyncio.gather(*(confirm(outcome) for outcome in sent)))

    async def _signal(self, handle: WorkflowHandle, decision: AnyDecision) -> dict[str, Any]:
        payload = self.payload(decision)
        await handle.signal(SIGNALS[decision.kind], payload)
        return payload

    async def _confirm(
        self,
        handle: WorkflowHandle,
        decision: AnyDecision,
        deadline: float,
        held: bool = False,
        payload: dict[str, Any] | None = None,
    ) -> Outcome:
        """The decision's verdict, polled until `deadline`: the update's outcome while
        Temporal holds it (no worker needed to ask), and the entry with its decision id in
        the run's decision log (this payload's, not a copy someone else sent under the id)."""
        outcome = Outcome(decision.approval_id, handle.id, decision, held=held, payload=payload)
        loop = asyncio.get_running_loop()
        delay = 0.02
        while True:
            if held:
                try:
                    answer = await self._poll_update(
                        handle.id,
                        _update_id(decision, payload or {}),
                        min(SLICE_SECONDS, deadline - loop.time()),
                    )
                except RPCError as error:
                    if error.status is RPCStatusCode.NOT_FOUND:
                        held = False  # gone with its run (continued as new): the log says
                else:
                    if answer.HasField("outcome"):
                        receipt = await self._receipt_of(handle.id, answer.outcome)
                        if receipt is not None and _ours(receipt.entry, payload):
                            outcome.entry = receipt.entry
                            outcome.record = receipt.record or outcome.record
                            return outcome
            try:
                records: list[ApprovalRecord] = await handle.query(
                    contract.QUERY_APPROVALS,
                    result_type=list[ApprovalRecord],
                    rpc_timeout=timedelta(
                        seconds=max(0.1, min(SLICE_SECONDS, deadline - loop.time()))
                    ),
                )
            except RPCError as error:
                # A busy or absent worker answers late: that is "not confirmed yet"; a run
                # that has ended since was decided by then.
                if error.status is RPCStatusCode.NOT_FOUND:
                    return outcome
                if error.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
                    raise
                records = []
            for record in records:
                if record.id != decision.approval_id:
                    continue
                outcome.record = record
                for entry in record.decisions:
                    if entry.decision_id == decision.decision_id and _ours(entry, payload):
                        outcome.entry = entry
                        return outcome
            if loop.time() >= deadline:
                return outcome
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)

    # --- audit ------------------------------------------------------------------------------

    async def audit(self, workflow_id: str) -> Audit:
        """Every approval of a workflow id with every decision, across continue-as-new."""
        executions = [
            execution
            async for execution in self.client.list_workflows(
                f"WorkflowId = '{_escaped(workflow_id)}'"
            )
        ]
        if not executions:
            try:
                description = await self.client.get_workflow_handle(workflow_id).describe()
            except RPCError as error:
                if error.status is RPCStatusCode.NOT_FOUND:
                    raise RunNotFound(
                        f"no run {quoted(workflow_id)}; `hitl runs` lists them"
                    ) from error
                raise
            executions = [description]
        executions.sort(key=lambda execution: execution.start_time)
        latest = executions[-1]
        audit = Audit(workflow_id, _status(latest.status), [e.run_id for e in executions])
        seen: dict[str, ApprovalRecord] = {}
        for execution in executions:
            for record in await self.approvals_of(workflow_id, execution.run_id, execution.status):
                seen[record.id] = record  # a carried approval: its latest state wins
        audit.approvals = sorted(seen.values(), key=lambda record: record.created_at)
        audit.refused = await self._refused(workflow_id, latest)
        return audit

    async def records(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        problems: list[str] | None = None,
    ) -> AsyncIterator[ApprovalRecord]:
        """Every approval created in [since, until) across runs, with every decision.

        The runs that can hold one are those closed since `since`, and those running that
        published a change since (an approval outlives neither its run nor the run it was
        carried into, and opening one is a change); each run of a chain is
        read, so what a continue-as-new did not carry is there too, and a carried approval
        comes once, in its latest state. Yielded run by run (each run's oldest first), not
        in one global order. A run whose records can't be read (an ended run with no
        worker to replay it, a memo this process can't decode) is said in `problems` when
        given, else raised.
        """
        since = since.astimezone(UTC)
        at = _timestamp(since)
        # A running run that stamped no change since `since` opened no approval since (an
        # opened approval is a change it stamps, HitlUpdatedAt): it needs no reading. Runs
        # that don't stamp (older workers) are read; a namespace without the attribute
        # refuses the query, and every running run is read.
        stamped = (
            f"{contract.UPDATED_AT_KEY.name} >= '{at}' OR {contract.UPDATED_AT_KEY.name} IS NULL"
        )
        queries = [
            f"{contract.STATE_KEY.name} IS NOT NULL AND (CloseTime >= '{at}' OR "
            f"(ExecutionStatus = 'Running' AND ({stamped})))",
            f"{contract.STATE_KEY.name} IS NOT NULL AND "
            f"(ExecutionStatus = 'Running' OR CloseTime >= '{at}')",
        ]
        if until is not None:
            until = until.astimezone(UTC)
            queries = [f"{q} AND StartTime < '{_timestamp(until)}'" for q in queries]
        chains: dict[str, list[WorkflowExecution]] = {}
        for query in queries:
            try:
                async for execution in self.client.list_workflows(query, page_size=LIST_PAGE_SIZE):
                    chains.setdefault(execution.id, []).append(execution)
                break
            except RPCError as error:
                if error.status is not RPCStatusCode.INVALID_ARGUMENT or query is queries[-1]:
                    raise
                chains = {}
        limit = asyncio.Semaphore(READ_CONCURRENCY)
        polled: dict[str, asyncio.Future[bool]] = {}

        async def readable(execution: WorkflowExecution) -> None:
            """Raise at once for a run only a worker can answer for, on a task queue no
            worker polls: its query would wait out its whole timeout to say the same."""
            if execution.status is WorkflowExecutionStatus.COMPLETED:
                return  # an agent's result is read without a worker
            queue = execution.task_queue
            if queue not in polled:
                polled[queue] = asyncio.ensure_future(self._queue_polled(queue))
            if not await polled[queue]:
                raise RecordUnavailable(
                    f"it is {_status(execution.status)} and no worker has polled its task "
                    f"queue {quoted(queue)} lately; its approvals are read by a worker "
                    "replaying it (`hitl doctor`)"
                )

        async def chain(workflow_id: str, runs: list[WorkflowExecution]) -> list[ApprovalRecord]:
            seen: dict[str, ApprovalRecord] = {}
            for execution in sorted(runs, key=lambda e: e.start_time):
                async with limit:
                    try:
                        await readable(execution)
                        found = await self.approvals_of(
                            workflow_id, execution.run_id, execution.status
                        )
                    except (ReviewError, RPCError, ValidationError) as error:
                        if problems is None:
                            raise
                        problems.append(f"run {workflow_id}/{execution.run_id}: {error}")
                        continue
                for record in found:
                    seen[record.id] = record  # a carried approval: its latest state wins
            return sorted(
                (
                    r
                    for r in seen.values()
                    if r.created_at >= since and (until is None or r.created_at < until)
                ),
                key=lambda record: record.created_at,
            )

        tasks = [asyncio.ensure_future(chain(wf, runs)) for wf, runs in chains.items()]
        try:
            for done in asyncio.as_completed(tasks):
                for record in await done:
                    yield record
        finally:
            for task in tasks:
                task.cancel()

    async def _agent_result(self, workflow_id: str, run_id: str | None) -> RunResult | None:
        """A completed agent run's result (it carries its approvals); None for other workflows."""
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id, result_type=RunResult)
        try:
            return await handle.result()
        except KeyError as error:
            raise _encrypted(workflow_id) from error
        except (ValidationError, TypeError, ValueError):
            return None  # a workflow of your own: its result is its own

    async def _refused(self, workflow_id: str, latest: WorkflowExecution) -> list[RefusedDecision]:
        handle = self.client.get_workflow_handle(workflow_id, run_id=latest.run_id)
        if latest.status is WorkflowExecutionStatus.COMPLETED:
            result = await self._agent_result(workflow_id, latest.run_id)
            if result is not None:
                return result.refused_decisions
        try:
            status: GateStatus = await handle.query(
                contract.QUERY_STATUS, result_type=GateStatus, rpc_timeout=QUERY_TIMEOUT
            )
        except (RPCError, ValidationError):
            return []
        return status.refused_decisions


_DEFINITE = (
    RPCStatusCode.NOT_FOUND,
    RPCStatusCode.INVALID_ARGUMENT,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.FAILED_PRECONDITION,
)
"""Errors that say the update was not taken: nothing to ask about afterwards."""


def _update_id(decision: AnyDecision, payload: dict[str, Any]) -> str:
    """The update's id: Temporal takes one update per id and run, and answers a second
    with the first one's outcome, as the run refuses a second copy of a decision.

    It names the payload too: a decision id is seen by everyone on a shared channel (a
    Redis message), and an update sent first under the same id with an unsigned or
    altered copy would otherwise be the answer the real decision gets."""
    return f"{decision.approval_id}/{decision.decision_id}/{payload_digest(payload)}"


def _ours(entry: DecisionEntry, payload: dict[str, Any] | None) -> bool:
    """Whether a log entry is this payload's (entries of runs before payload digests, and
    a payload not known here, are taken by their decision id)."""
    return payload is None or entry.payload_digest in (None, payload_digest(payload))


def _refused_update(cause: BaseException | None) -> tuple[None, bool]:
    """An update the run refused before history: a decision it could not read raises
    DecisionRejected; a run with no `decide` handler (it began before updates existed)
    gives (None, False), and the signal serves it."""
    message = str(getattr(cause, "message", "") or cause)
    if "not found" in message.lower() and "update" in message.lower():
        return None, False
    kind = getattr(cause, "type", None)
    code = kind if kind in set(RefusalCode) else None
    raise DecisionRejected(message, code)


def _receipt(value: Any) -> Receipt | None:
    """The update's answer: a receipt, or (from a worker before receipts) the entry alone."""
    try:
        if isinstance(value, dict) and "entry" in value:
            return Receipt.model_validate(value)
        return Receipt(entry=DecisionEntry.model_validate(value))
    except ValidationError:
        return None


def polling_lately(pollers: Sequence[PollerInfo], now: datetime | None = None) -> list[PollerInfo]:
    """The pollers seen in the last `POLLER_SEEN_SECONDS`: the server lists a worker that
    has stopped for minutes after its last poll, so a listing alone is no living worker."""
    now = now or datetime.now(UTC)
    seen = timedelta(seconds=POLLER_SEEN_SECONDS)
    return [p for p in pollers if now - p.last_access_time.ToDatetime(tzinfo=UTC) < seen]


_UNDECODABLE = (KeyError, ValueError, TypeError, RuntimeError)
"""What decoding a memo raises when its payloads are encrypted with a key (or a codec) this
process lacks: the converter knows no such encoding."""
UNREADABLE_MEMO = "(encrypted: set HITL_CODEC_KEY to read it)"


async def _memo_of(execution: WorkflowExecution) -> Mapping[str, Any] | None:
    """The run's memo; None when this process can't decode it. One such run must not break
    a listing of everyone's runs."""
    try:
        return await execution.memo()
    except _UNDECODABLE:
        return None


async def _pending_of(execution: WorkflowExecution) -> list[PendingApproval]:
    """The run's pending approvals from its memo (none that this process can't decode).
    Only the memo's pending field is decoded, straight into models."""
    try:
        items: list[PendingApproval] = await execution.memo_value(
            contract.MEMO_PENDING, default=[], type_hint=list[PendingApproval]
        )
    except _UNDECODABLE:
        return []
    return items


def _encrypted(workflow_id: str) -> RecordUnavailable:
    """What a run's records encrypted with a key (or codec) this process lacks say: the
    converter knows no such encoding (a KeyError)."""
    return RecordUnavailable(
        f"run {workflow_id}: its records are encrypted with a key this process lacks "
        "(set HITL_CODEC_KEY to read them)"
    )


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def sort_page(
    items: Sequence[PendingApproval],
    sort: str,
    descending: bool = False,
    limit: int = PAGE_SIZE,
    after: Sequence[Any] | None = None,
) -> tuple[list[PendingApproval], list[Any] | None]:
    """One page of `items` in `sort` order (`sort_key`), and the key to pass as `after`
    for the next page (None: this was the last). The key names a place in the order, not
    an offset, so approvals decided between pages shift nothing."""
    keyed = [(sort_key(item, sort, descending), item) for item in items]
    keyed.sort(key=lambda pair: pair[0])
    if after is not None:
        start = list(after)
        keyed = [pair for pair in keyed if pair[0] > start]
    page = keyed[:limit]
    return [item for _, item in page], (page[-1][0] if len(keyed) > limit else None)


def _pending_query(run: str | None) -> str:
    query = f"ExecutionStatus = 'Running' AND {contract.PENDING_KEY.name} > 0"
    if run is not None:
        query += f" AND WorkflowId = '{_escaped(run)}'"
    return query


def _timestamp(moment: datetime) -> str:
    """A moment as visibility queries take it (RFC 3339, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
