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
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract
from hitl.models import (
    ApprovalRecord,
    ApproveDecision,
    DecisionEntry,
    GateStatus,
    ModifyDecision,
    PendingApproval,
    RefusedDecision,
    RejectDecision,
    RevokeDecision,
    RunResult,
)
from hitl.reviewers import sign
from hitl.reviewers import signer as own_signer
from hitl.text import quoted

AnyDecision = ApproveDecision | RejectDecision | ModifyDecision | RevokeDecision
LIST_PAGE_SIZE = 5000
PAGE_SIZE = 50
MAX_PAGES_SCANNED = 20
"""A filtered page stops looking after this many visibility pages, and says where it got."""
CONFIRM_SECONDS = 5.0
BULK_CONFIRM_SECONDS_EACH = 0.05
QUERY_TIMEOUT = timedelta(seconds=10)
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
SIGNALS = {
    "approve": contract.SIGNAL_APPROVE,
    "reject": contract.SIGNAL_REJECT,
    "modify": contract.SIGNAL_MODIFY,
    "revoke": contract.SIGNAL_REVOKE,
}


class ReviewError(Exception):
    """Something a reviewer asked for that can't be done, in one sentence."""


class NotAnApprovalId(ReviewError):
    pass


class ApprovalNotFound(ReviewError):
    pass


class RunNotFound(ReviewError):
    pass


class DecisionRejected(ReviewError):
    """The run refused a decision it could not read, before it reached history."""


class RecordUnavailable(ReviewError):
    """The run has ended and its records can only be read by replaying it on a worker."""


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

    @property
    def applied(self) -> bool:
        return self.entry is not None and self.entry.outcome == "applied"

    @property
    def what(self) -> str:
        """The action, in a few words, for a report."""
        if self.record is not None:
            return f"{self.record.action_json.tool}: {self.record.preview.summary}"
        return ""


@dataclass
class Page:
    """One page of a listing, and where the next one starts (None: this was the last)."""

    items: list[PendingApproval]
    next_page_token: bytes | None = None


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


def current_digest(record: ApprovalRecord) -> str:
    """The digest of the action a decision on this approval now decides: a reviewer's
    modification while a quorum is still counting, else the proposed action."""
    return record.effective_action.digest() if record.modified_action_json else record.action_digest


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

    async def pending(self, tool: str | None = None) -> list[PendingApproval]:
        """Every pending approval of every running workflow, oldest first, from visibility."""
        query = f"ExecutionStatus = 'Running' AND {contract.PENDING_KEY.name} > 0"
        found: list[PendingApproval] = []
        # Large pages: listing is bound by the server's visibility store, and every page is
        # a round trip. Only the pending field of the memo is decoded, straight into models.
        async for execution in self.client.list_workflows(query, page_size=LIST_PAGE_SIZE):
            found.extend(
                item for item in await _pending_of(execution) if tool is None or item.tool == tool
            )
        found.sort(key=lambda item: item.created_at)
        return found

    async def pending_page(
        self,
        limit: int = PAGE_SIZE,
        page_token: bytes | None = None,
        tool: str | None = None,
        run: str | None = None,
    ) -> Page:
        """One page of pending approvals, newest runs first, each run's oldest first.

        A page reads one visibility page of `limit` runs (each run's memo holds its
        pending summaries), so its cost does not grow with how many runs wait. It holds
        at most `limit` approvals and never splits a run between pages, so that the
        token, Temporal's own (a position after the last run shown), stays valid while
        runs are decided; a single run with more than `limit` pending approvals comes
        whole. With a `tool` filter a page may come short of `limit` while more follow:
        follow `next_page_token` until it is None.
        """
        if limit < 1:
            raise ReviewError("a page holds at least one approval (limit >= 1)")
        query = f"ExecutionStatus = 'Running' AND {contract.PENDING_KEY.name} > 0"
        if run is not None:
            query += f" AND WorkflowId = '{_escaped(run)}'"
        items: list[PendingApproval] = []
        token = page_token
        for _ in range(MAX_PAGES_SCANNED):
            listing = self.client.list_workflows(query, page_size=limit, next_page_token=token)
            await listing.fetch_next_page()
            runs = [
                [item for item in await _pending_of(e) if tool is None or item.tool == tool]
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
                    if tool is None or item.tool == tool
                ]
                return Page(items, exact.next_page_token)
            token = listing.next_page_token
            if token is None or len(items) >= limit:
                break
        return Page(items, token)

    async def runs(self, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Workflows that use the gate, newest first: state, pending count, start, task."""
        query = f"{contract.STATE_KEY.name} IS NOT NULL"
        if state:
            if not _ID.match(state):
                raise ReviewError(
                    f"{quoted(state)} is not a state (running, awaiting_approval, ...)"
                )
            query = f"{contract.STATE_KEY.name} = '{state}'"
        runs = []
        async for execution in self.client.list_workflows(query, limit=limit):
            attributes = execution.typed_search_attributes
            memo = await execution.memo()
            status = execution.status.name.lower() if execution.status else "unknown"
            shown = attributes.get(contract.STATE_KEY) or status
            runs.append(
                {
                    "id": execution.id,
                    "run_id": execution.run_id,
                    "workflow_type": execution.workflow_type,
                    "state": shown
                    if status == "running" or shown in ("completed", "step_limit")
                    else f"{status} ({shown})",
                    "status": status,
                    "pending": attributes.get(contract.PENDING_KEY) or 0,
                    "started_at": execution.start_time,
                    "task": memo.get(contract.MEMO_TASK, ""),
                }
            )
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
        """Send a decision and say what became of it.

        `via="update"` (the default) sends it as the `decide` update: one round trip, the
        run's own verdict back, and malformed decisions kept out of history. When no worker
        takes the update within a few seconds it goes as a signal instead, which Temporal
        keeps until a worker runs the workflow (the run refuses the second copy of a
        decision it already has). `via="signal"` sends a signal and confirms it from the
        decision log. Without `workflow_id` the approval's run is found through
        visibility first. When this process has a signing key (`HITL_SIGNING_KEY`), the
        decision is signed and bound to the exact action.
        """
        decision = with_decision_id(decision)
        approval_id = check_id(decision.approval_id)
        located = None
        if workflow_id is None:
            located = await self.locate(approval_id)
            workflow_id = located.workflow_id
        handle = self.client.get_workflow_handle(workflow_id)
        if self.signer is not None and decision.kind != "revoke" and not decision.action_digest:
            digest = located.summary.action_digest if located and located.summary else None
            if digest is None:
                digest = current_digest(await self.get(approval_id))
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
        try:
            if via == "update":
                entry = await self._update(handle, payload)
                if entry is not None:
                    return Outcome(approval_id, workflow_id, decision, entry=entry)
            await handle.signal(SIGNALS[decision.kind], payload)
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
            return Outcome(
                approval_id, workflow_id, decision, record=await self.get(approval_id), ended=True
            )
        except DecisionRejected as rejected:
            return Outcome(approval_id, workflow_id, decision, rejected=str(rejected))
        return await self._confirm(handle, decision, self.confirm_seconds)

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
        self, handle: WorkflowHandle, payload: dict[str, Any]
    ) -> DecisionEntry | None:
        """The run's log entry for the decision, or None when no worker took it in time."""
        try:
            entry: DecisionEntry = await handle.execute_update(
                contract.UPDATE_DECIDE,
                payload,
                result_type=DecisionEntry,
                rpc_timeout=timedelta(seconds=self.confirm_seconds),
            )
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            return None
        except WorkflowUpdateFailedError as error:
            message = str(getattr(error.cause, "message", "") or error.cause)
            if "not found" in message.lower() and "update" in message.lower():
                return None  # a run that began before updates existed: the signal serves it
            raise DecisionRejected(message) from error
        return entry

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
            async with limit:
                try:
                    await self._signal(self.client.get_workflow_handle(item.session_id), decision)
                except RPCError as error:
                    if error.status is not RPCStatusCode.NOT_FOUND:
                        raise
                    return Outcome(item.id, item.session_id, decision, ended=True)
            return Outcome(item.id, item.session_id, decision)

        async def confirm(sent: Outcome) -> Outcome:
            if sent.ended:
                return sent
            async with limit:
                handle = self.client.get_workflow_handle(sent.workflow_id)
                return await self._confirm(handle, sent.decision, wait)

        sent = await asyncio.gather(*(send(item) for item in items))
        return list(await asyncio.gather(*(confirm(outcome) for outcome in sent)))

    async def _signal(self, handle: WorkflowHandle, decision: AnyDecision) -> None:
        await handle.signal(SIGNALS[decision.kind], self.payload(decision))

    async def _confirm(
        self, handle: WorkflowHandle, decision: AnyDecision, wait_seconds: float
    ) -> Outcome:
        """The decision's entry in the run's decision log, polled until it shows."""
        outcome = Outcome(decision.approval_id, handle.id, decision)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        delay = 0.02
        while True:
            try:
                records: list[ApprovalRecord] = await handle.query(
                    contract.QUERY_APPROVALS,
                    result_type=list[ApprovalRecord],
                    rpc_timeout=timedelta(seconds=max(1.0, deadline - loop.time())),
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
                    if entry.decision_id == decision.decision_id:
                        outcome.entry = entry
                        return outcome
            if loop.time() > deadline:
                return outcome
            await asyncio.sleep(delay)
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

    async def _agent_result(self, workflow_id: str, run_id: str | None) -> RunResult | None:
        """A completed agent run's result (it carries its approvals); None for other workflows."""
        handle = self.client.get_workflow_handle(workflow_id, run_id=run_id, result_type=RunResult)
        try:
            return await handle.result()
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


async def _pending_of(execution: WorkflowExecution) -> list[PendingApproval]:
    items: list[PendingApproval] = await execution.memo_value(
        contract.MEMO_PENDING, default=[], type_hint=list[PendingApproval]
    )
    return items


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
