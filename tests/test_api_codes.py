"""The API answers a refused decision from its code, never from its sentence: the status is
the code's in the one table (`hitl.decisions.FORMS`), and the answer carries the code.

Milliseconds, no server: the run's verdicts are made here as the reviews library hands
them to the API (`Outcome`); tests/test_api.py sends real ones through a real run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from hitl.api.deps import ApiState
from hitl.api.errors import ApiError
from hitl.api.routers.approvals import _answer
from hitl.decisions import FORMS, UNKNOWN_FORM, RefusalCode
from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    DecisionEntry,
    DecisionKind,
    RejectDecision,
    ToolAction,
    ToolPreview,
)
from hitl.policy import TIMEOUT_REVIEWER
from hitl.reviews import Outcome

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
APPROVAL = "apr_0123456789abcdef"
RUN = "run-1"


def record(
    status: ApprovalStatus = ApprovalStatus.PENDING, reviewer: str | None = None
) -> ApprovalRecord:
    action = ToolAction(tool="delete_files", args={"paths": ["logs/a.log"]})
    return ApprovalRecord(
        id=APPROVAL,
        session_id=RUN,
        action_json=action,
        action_digest=action.digest(),
        status=status,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
        reviewer=reviewer,
        context=ApprovalContext(original_request="clean up"),
        preview=ToolPreview(summary="delete 1 file"),
    )


def entry(outcome: str = "refused", refusal: str | None = None, code: str | None = None,
          kind: DecisionKind = DecisionKind.REJECT) -> DecisionEntry:  # fmt: skip
    return DecisionEntry(
        kind=kind,
        reviewer="bob",
        received_at=NOW,
        outcome=outcome,  # type: ignore[arg-type]
        refusal=refusal,
        code=code,
    )


class Feed:
    def __init__(self) -> None:
        self.announced: list[ApprovalRecord] = []

    def announce(self, record: ApprovalRecord) -> None:
        self.announced.append(record)


class Runs:
    """The run as read again after a decision (what an older worker's answer needs)."""

    def __init__(self, records: list[ApprovalRecord]) -> None:
        self.records, self.reads = records, 0

    async def approvals_of(self, workflow_id: str, *rest: Any) -> list[ApprovalRecord]:
        self.reads += 1
        return self.records


def state(*records: ApprovalRecord) -> Any:
    return SimpleNamespace(feed=Feed(), reviews=Runs(list(records)))


def outcome(**fields: Any) -> Outcome:
    decision = RejectDecision(approval_id=APPROVAL, reviewer="bob", reason="no")
    return Outcome(APPROVAL, RUN, decision, **fields)


async def refused(api: Any, verdict: Outcome) -> ApiError:
    with pytest.raises(ApiError) as raised:
        await _answer(cast(ApiState, api), verdict)
    return raised.value


@pytest.mark.parametrize("code", list(RefusalCode))
async def test_every_code_is_answered_with_its_own_status_and_named(code: RefusalCode) -> None:
    # The sentence says something else on purpose: only the code may choose the status.
    said = "bob may not decide delete_files calls; modified arguments are invalid"
    verdict = outcome(entry=entry(refusal=said, code=code.value), record=record())
    error = await refused(state(), verdict)
    assert (error.status, error.code, error.detail) == (FORMS[code].http, code.value, said)
    body = error.response().body
    assert f'"code":"{code.value}"'.encode() in body


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (RefusalCode.STALE_ACTION, 409),
        (RefusalCode.NOT_ALLOWED, 403),
        (RefusalCode.INVALID_ARGUMENTS, 422),
        (RefusalCode.UNKNOWN_APPROVAL, 404),
        (RefusalCode.ALREADY_DECIDED, 409),
        (RefusalCode.UNVERIFIABLE, 503),
    ],
)
async def test_the_statuses_clients_rely_on(code: RefusalCode, status: int) -> None:
    error = await refused(state(), outcome(entry=entry(refusal="x", code=code), record=record()))
    assert (error.status, error.code) == (status, code)


async def test_a_code_this_api_does_not_know_is_a_plain_refusal_and_kept() -> None:
    verdict = outcome(entry=entry(refusal="from a newer worker", code="brand_new"), record=record())
    error = await refused(state(), verdict)
    assert (error.status, error.code) == (UNKNOWN_FORM.http, "brand_new")


@pytest.mark.parametrize(
    ("sentence", "kind", "code"),
    [
        ("the decision names action \"x\", but approval a is for action y; look at it again",
         DecisionKind.APPROVE, RefusalCode.STALE_ACTION),
        ("grace may not decide delete_files calls (their tools: send_email)",
         DecisionKind.APPROVE, RefusalCode.NOT_ALLOWED),
        ("modified arguments are invalid for delete_files: paths: must not repeat",
         DecisionKind.MODIFY, RefusalCode.INVALID_ARGUMENTS),
        ("approval a does not take modified arguments; approve or reject it",
         DecisionKind.MODIFY, RefusalCode.NOT_MODIFIABLE),
        ("an unsigned signal is refused: decisions must be signed",
         DecisionKind.APPROVE, RefusalCode.UNAUTHENTICATED),
        ("alice has already approved this action; it needs 2 different approvers",
         DecisionKind.APPROVE, RefusalCode.DUPLICATE_VOTE),
        ("something no reader knows", DecisionKind.APPROVE, None),
    ],
)  # fmt: skip
async def test_an_entry_from_a_worker_before_codes_is_read_once_as_before(
    sentence: str, kind: DecisionKind, code: RefusalCode | None
) -> None:
    verdict = outcome(entry=entry(refusal=sentence, kind=kind), record=record())
    error = await refused(state(), verdict)
    form = FORMS[code] if code is not None else UNKNOWN_FORM
    assert (error.status, error.code) == (form.http, code)


async def test_a_decided_approval_without_codes_is_already_decided_or_expired() -> None:
    decided = outcome(
        entry=entry(refusal="may not decide"), record=record(ApprovalStatus.APPROVED, "al")
    )
    assert (await refused(state(), decided)).code == RefusalCode.ALREADY_DECIDED
    lapsed = record(ApprovalStatus.REJECTED, TIMEOUT_REVIEWER)
    expired = await refused(state(), outcome(entry=entry(refusal="x"), record=lapsed))
    assert (expired.status, expired.code) == (409, RefusalCode.EXPIRED)


async def test_a_decision_the_run_would_not_read_is_answered_from_its_code() -> None:
    unknown = outcome(rejected="unknown approval id in this run", code="unknown_approval")
    assert (await refused(state(), unknown)).status == 404
    # An older worker gave no code: such a decision is unreadable to the run.
    older = await refused(state(), outcome(rejected="kind is approve, reject, modify or revoke"))
    assert (older.status, older.code) == (422, RefusalCode.MALFORMED)


async def test_the_receipts_record_is_the_answer_and_the_run_is_read_only_without_one() -> None:
    decided = record(ApprovalStatus.REJECTED, "bob")
    api = state(record())  # reading the run again would say pending
    answer = await _answer(cast(ApiState, api), outcome(entry=entry("applied"), record=decided))
    assert answer.status_code == 200 and api.reviews.reads == 0
    assert b'"message":"rejected by bob"' in answer.body
    assert api.feed.announced == [decided]

    older = state(decided)
    answer = await _answer(cast(ApiState, older), outcome(entry=entry("applied")))
    assert answer.status_code == 200 and older.reviews.reads == 1
    assert b'"status":"rejected"' in answer.body
