"""/approvals: list, read, and decide (approve, reject, modify, revoke).

A decision call answers once the run has confirmed it, with the run's receipt: the entry
it logged, and the approval as the run now sees it. A refusal is answered from its code
(`hitl.decisions.FORMS`), with the run's own sentence.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from temporalio.service import RPCError

from hitl.api.deps import ApiState, Identity, State, Who
from hitl.api.errors import ApiError, responses, validation_sentence
from hitl.api.schemas import (
    ApprovalItem,
    ApprovalPage,
    ApproveBody,
    Decided,
    DecisionBody,
    HistoryPage,
    ModifyBody,
    RejectBody,
    RevokeBody,
)
from hitl.arguments import schema_problem
from hitl.decisions import AnyDecision, RefusalCode, current_digest, describe_entry
from hitl.ledger import decided_refusal
from hitl.models import (
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    DecisionEntry,
    ModifyDecision,
    PendingApproval,
    RejectDecision,
    RevokeDecision,
)
from hitl.reviewers import ReviewerConfig
from hitl.reviews import (
    CONFIRM_SECONDS,
    SORTS,
    ApprovalNotFound,
    Outcome,
    PendingFilter,
    ReviewError,
    sort_page,
)

router = APIRouter(
    prefix="/approvals",
    tags=["approvals"],
    responses=responses(401, 404, 422, 503),
)
ApprovalId = Annotated[str, Path(max_length=200, description="e.g. apr_1a2b3c4d5e6f7a8b")]

# --- reading -----------------------------------------------------------------------------------

_BAD_PAGE_TOKEN = "page_token is not one this API gave out; leave it out to start from page one"


def _encode_token(key: bytes, token: bytes | None) -> str | None:
    if not token:
        return None
    tag = hmac.new(key, token, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(tag + token).decode().rstrip("=")


def _decode_token(key: bytes, text: str) -> bytes:
    """Temporal's token, if this API made it: the server answers a made-up one with an
    internal error (and the client retries it for seconds), so it never gets one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    tag, token = raw[:16], raw[16:]
    if not token or not hmac.compare_digest(
        tag, hmac.new(key, token, hashlib.sha256).digest()[:16]
    ):
        raise ApiError(422, _BAD_PAGE_TOKEN)
    return token


_WANTED = {
    "approved": {ApprovalStatus.APPROVED},
    "rejected": {ApprovalStatus.REJECTED},
    "modified": {ApprovalStatus.MODIFIED},
    "decided": {ApprovalStatus.APPROVED, ApprovalStatus.REJECTED, ApprovalStatus.MODIFIED},
    "all": set(ApprovalStatus),
}


_SORTED_TOKEN = b"hitl-sorted:"
"""What a sorted listing's page token starts with (inside the signed part): Temporal's own
tokens, for the unsorted listing, never do."""
_DURATION = re.compile(r"^([0-9]{1,7})(s|m|h|d)?$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EXPIRES_WITHIN = timedelta(days=366)


def _duration(name: str, text: str) -> timedelta:
    found = _DURATION.match(text.strip())
    if found is None:
        raise ApiError(
            422,
            f"{name}={text[:40]!r} is not a duration: give a whole number of seconds, or one "
            "with a unit s, m, h or d (e.g. 90s, 15m, 2h, 1d)",
        )
    seconds = int(found.group(1)) * _UNIT[found.group(2) or "s"]
    if seconds < 1 or seconds > MAX_EXPIRES_WITHIN.total_seconds():
        raise ApiError(422, f"{name}={text} is out of range: between 1s and 366d")
    return timedelta(seconds=seconds)


def _sorted_token(key: bytes, sort: str, order: str, after: list[object] | None) -> str | None:
    if after is None:
        return None
    return _encode_token(key, _SORTED_TOKEN + json.dumps([sort, order, after]).encode())


def _sorted_after(key: bytes, text: str, sort: str, order: str) -> list[object]:
    token = _decode_token(key, text)
    if not token.startswith(_SORTED_TOKEN):
        raise ApiError(
            422, f"page_token is from the unsorted listing; with sort={sort} start without it"
        )
    given_sort, given_order, after = json.loads(token[len(_SORTED_TOKEN) :])
    if (given_sort, given_order) != (sort, order):
        raise ApiError(
            422,
            f"page_token is from the listing sorted by {given_sort} {given_order}, not by "
            f"{sort} {order}; start without it",
        )
    return list(after)


@router.get("", response_model=ApprovalPage, summary="List approvals")
async def list_approvals(
    state: State,
    who: Who,
    status: Annotated[
        Literal["pending", "approved", "rejected", "modified", "decided", "all"], Query()
    ] = "pending",
    tool: Annotated[str | None, Query(max_length=200)] = None,
    run: Annotated[str | None, Query(max_length=1000, description="a workflow id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
    requester: Annotated[
        str | None, Query(max_length=200, description="who asked for the run (requested_by)")
    ] = None,
    risk_min: Annotated[int | None, Query(ge=0, le=100)] = None,
    risk_max: Annotated[int | None, Query(ge=0, le=100)] = None,
    expires_within: Annotated[
        str | None,
        Query(max_length=20, description="expiring within this long: seconds, or 90s, 15m, 2h, 1d"),
    ] = None,
    sort: Annotated[
        Literal["expires_at", "risk"] | None,
        Query(description="sorted by this over every pending approval; default newest runs first"),
    ] = None,
    order: Annotated[Literal["asc", "desc"] | None, Query()] = None,
) -> ApprovalPage:
    """Pending approvals of every run, a page at a time, from visibility alone. Decided
    ones are listed for one run (`run=`), in one page. Only approvals of tools this
    reviewer may read are listed.

    Unsorted, runs come newest first, a visibility page at a time (its cost does not grow
    with how many wait; with filters a page may come short while `next_page_token` says
    more follow). With `sort` (`expires_at`, soonest first, or `risk`, lowest first;
    `order=desc` turns it round) every pending approval is read to sort them, so a page
    costs as much as listing them all."""
    filters = PendingFilter(
        tool=tool,
        run=run,
        requester=requester,
        risk_min=risk_min,
        risk_max=risk_max,
        expires_within=_duration("expires_within", expires_within)
        if expires_within is not None
        else None,
    )
    if risk_min is not None and risk_max is not None and risk_min > risk_max:
        raise ApiError(
            422, f"risk_min={risk_min} is above risk_max={risk_max}: nothing could match"
        )
    if order is not None and sort is None:
        raise ApiError(422, f"order={order} needs sort= one of {', '.join(SORTS)}")
    if status != "pending":
        if run is None:
            raise ApiError(
                422,
                f"status={status} lists one run's approvals: add run=WORKFLOW_ID (GET /runs "
                "lists runs); across all runs only pending approvals are listed",
            )
        given = [
            name
            for name, value in (
                ("requester", requester),
                ("risk_min", risk_min),
                ("risk_max", risk_max),
                ("expires_within", expires_within),
                ("sort", sort),
            )
            if value is not None
        ]
        if given:
            raise ApiError(
                422,
                f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to pending "
                f"approvals only; with status={status} give run= (and tool=) alone",
            )
        audit = await state.reviews.audit(run)
        config = state.config
        return ApprovalPage(
            items=[
                ApprovalItem.of(record)
                for record in audit.approvals
                if record.status in _WANTED[status]
                and (tool is None or record.action_json.tool == tool)
                and _may_see(who, config, record.action_json.tool, record.escalated_to)
            ]
        )
    config = state.config  # read once for the page, not once per approval
    now = datetime.now(UTC)

    def shown(item: PendingApproval) -> bool:
        return filters.matches(item, now) and _may_see(who, config, item.tool, item.escalated_to)

    if sort is not None:
        direction = order or "asc"
        after = (
            _sorted_after(state.page_key, page_token, sort, direction)
            if page_token is not None
            else None
        )
        held = await state.feed.snapshot()
        if held is not None:
            # Sorting needs every pending approval: an open inbox keeps the feed polling,
            # and what it holds is as current as a listing (docs/benchmarks.md, inbox).
            found, last = sort_page(
                [item for item in held if (run is None or item.session_id == run) and shown(item)],
                sort,
                direction == "desc",
                limit,
                after,
            )
        else:
            found, last = await state.reviews.pending_sorted(
                sort, direction == "desc", limit, after, run=run, where=shown
            )
        return ApprovalPage(
            items=[ApprovalItem(**item.model_dump()) for item in found],
            next_page_token=_sorted_token(state.page_key, sort, direction, last),
        )
    token = _decode_token(state.page_key, page_token) if page_token is not None else None
    if token is not None and token.startswith(_SORTED_TOKEN):
        raise ApiError(422, "page_token is from a sorted listing; give the same sort= with it")
    if token is not None and token.startswith(_HISTORY_TOKEN):
        # Temporal answers a token it did not make with an internal error, retried for
        # seconds: the history's own never reaches it.
        raise ApiError(422, "page_token is from the history (/approvals/history), not this listing")
    page = await state.reviews.pending_page(limit, token, run=run, where=shown)
    return ApprovalPage(
        items=[ApprovalItem(**item.model_dump()) for item in page.items],
        next_page_token=_encode_token(state.page_key, page.next_page_token),
    )


MAX_HISTORY_RECORDS = 20_000
"""The approvals one history listing reads at most (every page reads the whole range: it
is sorted by when each was decided, which no store keeps an order of)."""
HISTORY_SECONDS = 30.0
"""How long one history listing reads runs at most before answering with what it has."""
MAX_PROBLEMS = 20
_HISTORY_TOKEN = b"hitl-history:"


def _moment(name: str, text: str) -> datetime:
    """A time given as an ISO 8601 moment (UTC if it names no zone), or as a duration
    before now (7d, 2h, 90m)."""
    if _DURATION.match(text.strip()):
        return datetime.now(UTC) - _duration(name, text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(
            422,
            f"{name}={text[:40]!r} is neither a moment (ISO 8601, e.g. 2026-11-28T09:00:00Z) "
            "nor a duration before now (e.g. 7d, 2h)",
        ) from None
    try:
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        moment = datetime.min.replace(tzinfo=UTC)
    if not 1970 <= moment.year <= 9998:
        raise ApiError(422, f"{name}={text[:40]} is out of range: a moment from 1970 to 9998")
    return moment


def _decided_key(record: ApprovalRecord) -> list[object]:
    """Newest decision first, then by id: where a record falls in the history."""
    moment = record.reviewed_at or record.created_at
    return [-moment.timestamp(), record.id]


@router.get("/history", response_model=HistoryPage, summary="Decided approvals")
async def history(
    state: State,
    who: Who,
    since: Annotated[
        str, Query(max_length=40, description="ISO 8601 moment, or a duration before now: 7d")
    ] = "7d",
    until: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> HistoryPage:
    """Approvals created in [since, until) that are decided (approved, modified, rejected or
    expired), across runs and continue-as-new chains, newest decision first, a page at a
    time: who decided, when, and the reason. Only approvals of tools this reviewer may read
    are listed. Every page reads the whole range (`Reviews.records`), at most
    20,000 approvals and 30 s: `complete` is false when it stopped short."""
    start = _moment("since", since)
    end = _moment("until", until) if until is not None else None
    if end is not None and end <= start:
        raise ApiError(422, f"until={until} is not after since={since}: nothing could match")
    after = None
    if page_token is not None:
        token = _decode_token(state.page_key, page_token)
        if not token.startswith(_HISTORY_TOKEN):
            raise ApiError(422, "page_token is not from the history; start without it")
        after = json.loads(token[len(_HISTORY_TOKEN) :])
    config = state.config
    problems: list[str] = []
    found: list[tuple[list[object], ApprovalRecord]] = []
    complete = True
    read = 0
    try:
        async with asyncio.timeout(HISTORY_SECONDS):
            async for record in state.reviews.records(start, end, problems=problems):
                read += 1
                if read > MAX_HISTORY_RECORDS:
                    complete = False
                    break
                if record.status is ApprovalStatus.PENDING or not _may_see(
                    who, config, record.action_json.tool, record.escalated_to
                ):
                    continue
                key = _decided_key(record)
                if after is None or key > after:
                    found.append((key, record))
    except TimeoutError:
        complete = False
        problems.append(f"stopped reading runs after {HISTORY_SECONDS:g} s; narrow the range")
    found.sort(key=lambda pair: pair[0])
    page = found[:limit]
    more = len(found) > limit
    return HistoryPage(
        items=[ApprovalItem.of(record) for _, record in page],
        next_page_token=_encode_token(
            state.page_key, _HISTORY_TOKEN + json.dumps(page[-1][0]).encode()
        )
        if more
        else None,
        complete=complete and not problems,
        problems=problems[:MAX_PROBLEMS],
    )


def _unseen(approval_id: str) -> ApprovalNotFound:
    """An approval this reviewer may not read is answered as one that does not exist, word
    for word, so the answer does not tell that it does."""
    return ApprovalNotFound(
        f"no run has an approval {approval_id}; `hitl pending` lists the pending ones"
    )


@router.get("/{approval_id}", response_model=ApprovalRecord, summary="One approval")
async def get_approval(state: State, who: Who, approval_id: ApprovalId) -> ApprovalRecord:
    """The full record: request, reasoning, exact action, preview, risk, votes, decisions.
    An approval of a tool this reviewer may not read is a 404, as an unknown one is."""
    record = await state.reviews.get(approval_id)
    if not _may_see(who, state.config, record.action_json.tool, record.escalated_to):
        raise _unseen(approval_id)
    return record


# --- deciding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What a decision is checked against before it is sent."""

    workflow_id: str
    tool: str
    risk: int
    requested_by: str
    digest: str
    record: ApprovalRecord | None
    escalated_to: list[str] = field(default_factory=list)


def _may_see(who: Identity, config: ReviewerConfig, tool: str, escalated_to: list[str]) -> bool:
    """Those who may read the tool's approvals, and the reviewers one was escalated to."""
    return who.may_read(config, tool) or (who.name is not None and who.name in escalated_to)


async def _target(state: ApiState, who: Identity, approval_id: str, full: bool) -> _Target:
    """The approval to decide: from its run's memo summary when that says all (pending, no
    vote yet, so no modification counting votes either), else from the run's record. One
    this reviewer may not read is not found."""
    located = await state.reviews.locate(approval_id)
    item = located.summary
    if item is not None and not _may_see(who, state.config, item.tool, item.escalated_to):
        # The summary may lag an escalation to this reviewer: the run's record says.
        full = True
    if (
        not full
        and item is not None
        and item.action_digest is not None
        and item.votes == 0
        and located.running
    ):
        # One visibility query instead of that and a query of the run: the decision
        # reaches the run sooner. A stale summary costs nothing: the run refuses a
        # decision on an action that changed, and the answer says so.
        return _Target(
            located.workflow_id,
            item.tool,
            item.risk,
            item.requested_by,
            item.action_digest,
            None,
            item.escalated_to,
        )
    records = await state.reviews.approvals_of(located.workflow_id, located.run_id, located.status)
    record = next((r for r in records if r.id == approval_id), None)
    if record is None or not _may_see(
        who, state.config, record.action_json.tool, record.escalated_to
    ):
        raise _unseen(approval_id)
    return _Target(
        record.session_id,
        record.action_json.tool,
        record.risk,
        record.context.requested_by,
        current_digest(record),
        record,
        record.escalated_to,
    )


async def _decide(
    state: ApiState,
    who: Identity,
    approval_id: str,
    body: DecisionBody,
    kind: str,
    build: Callable[[str, str], AnyDecision],
    check: Callable[[ApprovalRecord], Awaitable[None]] | None = None,
) -> JSONResponse:
    name = who.decider(body.reviewer)
    target = await _target(state, who, approval_id, full=check is not None)
    config = state.config
    if config.reviewers:
        # The one authorizer, as the worker asks it again: a refusal is a clear 403 here,
        # before anything reaches the run.
        refusal = config.refusal(
            name,
            kind,
            target.tool,
            target.risk,
            target.requested_by,
            scope=body.scope if isinstance(body, ApproveBody) else None,
            max_risk=body.max_risk if isinstance(body, ApproveBody) else None,
            escalated_to=target.escalated_to,
        )
        if refusal is not None:
            raise ApiError.refused(RefusalCode.NOT_ALLOWED, refusal)
    if check is not None and target.record is not None:
        await check(target.record)
    try:
        decision = build(name, body.action_digest or target.digest)
    except ValidationError as error:
        raise ApiError.refused(RefusalCode.MALFORMED, validation_sentence(error)) from error
    outcome = await state.reviews.decide(decision, workflow_id=target.workflow_id)
    return await _answer(state, outcome)


async def _answer(state: ApiState, outcome: Outcome) -> JSONResponse:
    """The run's verdict as an HTTP answer: the status its refusal code says, the run's own
    sentence, and the receipt (entry and record)."""
    if outcome.rejected is not None:
        # The run would not take the decision at all (unreadable, or naming nothing there);
        # a worker from before codes said only that.
        raise ApiError.refused(outcome.code or RefusalCode.MALFORMED, outcome.rejected)
    if outcome.ended:
        record = outcome.record
        if record is not None and record.status is not ApprovalStatus.PENDING:
            decided = decided_refusal(record)
            raise ApiError.refused(decided.code, decided.sentence, record=record)
        raise ApiError.refused(
            RefusalCode.RUN_ENDED,
            f"run {outcome.workflow_id} has ended; approval {outcome.approval_id} can no "
            "longer be decided",
            record=record,
        )
    entry = outcome.entry
    if entry is None:
        sent = Decided(
            outcome="sent",
            message=f"the decision was sent to run {outcome.workflow_id}, but the run did not "
            f"confirm it within {CONFIRM_SECONDS:g} s; it applies when a worker runs the "
            "workflow (`hitl doctor` checks for workers)",
        )
        return JSONResponse(sent.model_dump(mode="json"), status_code=202)
    # The receipt carries the record as the run saw it after judging; a worker from
    # before receipts answered with the entry alone, so the run is read again.
    record = outcome.record or await _fresh(state, outcome)
    if entry.outcome == "applied":
        if record is not None:
            state.feed.announce(record)
        done = Decided(
            outcome="applied", message=describe_entry(entry, record), entry=entry, record=record
        )
        return JSONResponse(done.model_dump(mode="json"))
    code = outcome.refusal_code or _legacy_code(entry, record)
    raise ApiError.refused(code, entry.refusal or "refused", entry=entry, record=record)


async def _fresh(state: ApiState, outcome: Outcome) -> ApprovalRecord | None:
    """The approval as it is after the decision, read from the run (for older workers,
    whose `decide` update answers with the entry only)."""
    try:
        records = await state.reviews.approvals_of(outcome.workflow_id)
    except (ReviewError, RPCError):
        return outcome.record
    return next((r for r in records if r.id == outcome.approval_id), outcome.record)


# LEGACY, for refusals logged by workers from before refusal codes (`entry.code` is None):
# their code is read from the record, else from the sentence, once, here. Every worker
# that records codes bypasses this; remove it when no such worker's runs are left.
_LEGACY_SENTENCES: tuple[tuple[RefusalCode, tuple[str, ...]], ...] = (
    (RefusalCode.NOT_MODIFIABLE, ("does not take modified arguments",)),
    (RefusalCode.NOT_APPLICABLE, ("can't be granted",)),
    (RefusalCode.UNVERIFIABLE, ("reviewer configuration is unusable", "could not be verified")),
    (
        RefusalCode.NOT_ALLOWED,
        ("not a reviewer", "may not decide", "may approve up to", "started this run"),
    ),
    (RefusalCode.UNAUTHENTICATED, ("must be signed", "signature", "not an issuer", "signs only")),
    (RefusalCode.STALE_ACTION, ("the decision names action",)),
    (RefusalCode.LATE, ("at or after approval",)),
    (RefusalCode.DUPLICATE_VOTE, ("has already approved this action",)),
)


def _legacy_code(entry: DecisionEntry, record: ApprovalRecord | None) -> RefusalCode | None:
    """The code of a refusal logged without one (see above); None: answered as a plain
    refusal (409)."""
    if record is not None and record.status is not ApprovalStatus.PENDING:
        return decided_refusal(record).code
    sentence = entry.refusal or ""
    if entry.kind == "modify" and sentence.startswith("modified arguments"):
        return RefusalCode.INVALID_ARGUMENTS
    return next(
        (code for code, markers in _LEGACY_SENTENCES if any(m in sentence for m in markers)),
        None,
    )


_DECISION_RESPONSES = {
    **responses(400, 403, 409, 413),
    202: {"model": Decided, "description": "sent; the run has not confirmed it yet"},
}


@router.post(
    "/{approval_id}/approve",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Approve",
)
async def approve(
    state: State, who: Who, approval_id: ApprovalId, body: ApproveBody
) -> JSONResponse:
    """Approve the exact action (or, with `scope`, keep approving it for the rest of the
    run). Answers once the run confirms: with a quorum, `entry.note` says "1 of 2
    approvals" and the approval stays pending."""
    return await _decide(
        state,
        who,
        approval_id,
        body,
        "approve",
        lambda name, digest: ApproveDecision(
            approval_id=approval_id,
            reviewer=name,
            comment=body.comment,
            action_digest=digest,
            scope=body.scope,
            max_risk=body.max_risk,
        ),
    )


@router.post(
    "/{approval_id}/reject",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Reject",
)
async def reject(state: State, who: Who, approval_id: ApprovalId, body: RejectBody) -> JSONResponse:
    """Reject; the agent is told the reason and not to retry."""
    return await _decide(
        state,
        who,
        approval_id,
        body,
        "reject",
        lambda name, digest: RejectDecision(
            approval_id=approval_id, reviewer=name, reason=body.reason, action_digest=digest
        ),
    )


@router.post(
    "/{approval_id}/modify",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Run with other arguments",
)
async def modify(state: State, who: Who, approval_id: ApprovalId, body: ModifyBody) -> JSONResponse:
    """Run the action with new arguments. They are checked against the record's
    `args_schema` before anything is sent (422 with what is wrong); the run checks them
    again with the tool's own code."""

    async def valid(record: ApprovalRecord) -> None:
        problem = schema_problem(record, body.args)
        if problem is not None:
            raise ApiError.refused(
                RefusalCode.INVALID_ARGUMENTS,
                f"not sent: the arguments are invalid for {record.action_json.tool}: {problem}",
            )

    return await _decide(
        state,
        who,
        approval_id,
        body,
        "modify",
        lambda name, digest: ModifyDecision(
            approval_id=approval_id,
            reviewer=name,
            args=body.args,
            comment=body.comment,
            action_digest=digest,
        ),
        check=valid,
    )


@router.post(
    "/{approval_id}/revoke",
    response_model=Decided,
    responses=_DECISION_RESPONSES,
    summary="Revoke a standing approval",
)
async def revoke(state: State, who: Who, approval_id: ApprovalId, body: RevokeBody) -> JSONResponse:
    """End the standing approval granted with this approval (approve with scope `action`
    or `tool`); later calls ask again."""

    async def granted(record: ApprovalRecord) -> None:
        if not any(
            entry.outcome == "applied" and entry.scope in ("action", "tool")
            for entry in record.decisions
        ):
            raise ApiError.refused(
                RefusalCode.NOT_APPLICABLE,
                f"approval {record.id} granted no standing approval (only an approval with "
                "scope action or tool does); nothing to revoke",
            )

    return await _decide(
        state,
        who,
        approval_id,
        body,
        "revoke",
        lambda name, digest: RevokeDecision(
            approval_id=approval_id, reviewer=name, reason=body.reason
        ),
        check=granted,
    )
