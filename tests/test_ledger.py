"""The decision ledger on its own: every rule, in milliseconds, no Temporal.

A hypothesis state machine opens approvals, sends decisions of every kind (on time and
late, with current and stale digests, twins and reused decision ids, votes towards a
quorum, standing approvals and their revocation, junk), answers the checks the ledger
asks for as a worker might, lets time pass and approvals expire, and carries the ledger
across continue-as-new; after every step the ledger's invariants must hold. Example
tests below pin one refusal code each.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hitl import policy
from hitl.decisions import RefusalCode, current_digest
from hitl.ledger import (
    DECISION_KINDS,
    CheckArgs,
    Checked,
    Incoming,
    Judging,
    Ledger,
    Modification,
    Refusal,
    Verified,
    Verify,
    escalated_by,
)
from hitl.models import (
    MAX_EXTEND_SECONDS,
    MAX_REFUSED_PER_APPROVAL,
    MAX_REFUSED_PER_RUN,
    ApprovalRecord,
    ApprovalStatus,
    DecisionKind,
    EscalationPolicy,
    GateState,
    RuleVerdict,
    ToolAction,
    payload_digest,
)

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REVIEWERS = ["ann", "bob", "cy"]
TOOLS = ["delete_files", "run_command"]
QUIET = logging.getLogger("test_ledger")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def ledger(state: GateState | None = None) -> Ledger:
    return Ledger(state, logger=QUIET)


def accept(now: datetime) -> Any:
    """A worker that accepts every check."""

    def answer(need: Any) -> Any:
        if isinstance(need, Verify):
            return Verified(now)
        return Checked(now, modification=Modification(dict(need.args)))

    return answer


def drive(judging: Judging, answer: Any) -> list[Any]:
    """Run a judgement to its end, answering each need; the needs asked, in order."""
    needs = []
    try:
        need = next(judging)
        while True:
            needs.append(need)
            need = judging.send(answer(need))
    except StopIteration:
        pass
    return needs


# --- the state machine -----------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    approvals = Bundle("approvals")

    @initialize()
    def start(self) -> None:
        self.ledger = ledger()
        self.now = T0
        self.counter = 0
        self.items: list[Incoming] = []
        """Every decision received and queued (or refused at once with an entry)."""
        self.settled: dict[str, tuple[Any, ...]] = {}
        """What each settled approval looked like when it settled."""
        self.sent: list[tuple[DecisionKind, dict[str, Any]]] = []
        self.unattached = 0
        """Decisions that named nothing here: each one entry in the run's own list."""

    # --- helpers ---

    def _pending(self) -> list[str]:
        return [r.id for r in self.ledger.records.values() if r.status is ApprovalStatus.PENDING]

    def _receive(self, kind: DecisionKind, payload: Any) -> None:
        before = len(self.ledger.refused) + self.ledger.refused_dropped
        item = self.ledger.receive(kind, payload, kind.value, self.now)
        after = len(self.ledger.refused) + self.ledger.refused_dropped
        if item is None:
            assert after == before + 1, "a decision that names nothing is kept once, bounded"
            self.unattached += 1
            return
        assert after == before
        if item.entry is not None:
            event(f"received: {item.entry.code or 'twin'}")
        self.items.append(item)
        if isinstance(payload, dict):
            self.sent.append((kind, payload))

    def _answer(self, data: st.DataObject) -> Any:
        def answer(need: Any) -> Any:
            if isinstance(need, Verify):
                verdict = data.draw(st.sampled_from(["ok"] * 8 + ["no", "down"]))
                if verdict == "no":
                    return Verified(self.now, Refusal(RefusalCode.NOT_ALLOWED, "not allowed"))
                if verdict == "down":
                    return Verified(self.now, Refusal(RefusalCode.UNVERIFIABLE, "down"))
                return Verified(self.now)
            assert isinstance(need, CheckArgs)
            if data.draw(st.sampled_from([False, False, False, True])):
                return Checked(self.now, error=ValueError("n must be small"))
            return Checked(
                self.now,
                modification=Modification(
                    dict(need.args),
                    risk=data.draw(st.none() | st.integers(0, 100)),
                    quorum=data.draw(st.none() | st.integers(1, 3)),
                ),
            )

        return answer

    def _after(self, approval_id: str) -> None:
        """What the adapter does once an approval is no longer pending."""
        record = self.ledger.records[approval_id]
        if record.status is not ApprovalStatus.PENDING:
            self.ledger.settled(approval_id, self.now)

    # --- rules ---

    @rule(
        target=approvals,
        tool=st.sampled_from(TOOLS),
        n=st.integers(0, 2),
        quorum=st.integers(1, 3),
        risk=st.integers(0, 100),
        minutes=st.integers(3, 30),
        modifiable=st.booleans(),
        by_policy=st.sampled_from([False, False, False, True]),
        verdict=st.sampled_from([None, None, None, "approve", "deny", "ask"]),
    )
    def open(
        self,
        tool: str,
        n: int,
        quorum: int,
        risk: int,
        minutes: int,
        modifiable: bool,
        by_policy: bool,
        verdict: str | None,
    ) -> str:
        self.counter += 1
        record = self.ledger.open(
            ToolAction(tool=tool, args={"n": n}),
            approval_id=f"apr_{self.counter}",
            now=self.now,
            timeout=timedelta(minutes=minutes),
            risk=risk,
            modifiable=modifiable,
            quorum=quorum,
            rule=verdict_of(verdict),
        )
        if verdict == "deny":
            event("opened: denied by a rule")
            assert record.status is ApprovalStatus.REJECTED and record.standing is None
        elif record.rule is not None:
            event("opened: approved by a rule")
            assert record.quorum == 1 and record.standing is None
        if record.standing is not None:
            event("opened: decided by a standing approval")
            assert record.quorum == 1, "a standing approval never decides a quorum approval"
            assert record.status is ApprovalStatus.APPROVED
        if by_policy:
            applied = self.ledger.approve_by_policy(record.id, "low risk", self.now)
            assert applied == (
                record.quorum == 1 and record.standing is None and verdict not in EFFECTS
            )
        return record.id

    @rule(
        approval=approvals,
        kind=st.sampled_from([DecisionKind.APPROVE, DecisionKind.REJECT, DecisionKind.MODIFY]),
        reviewer=st.sampled_from(REVIEWERS),
        digest=st.sampled_from(["none", "current", "proposed", "stale"]),
        decision_id=st.none() | st.sampled_from(["d1", "d2", "d3"]),
        scope=st.sampled_from(["once", "once", "action", "tool"]),
        n=st.integers(0, 3),
        now=st.integers(0, 3),
        data=st.data(),
    )
    def decide(
        self,
        approval: str,
        kind: DecisionKind,
        reviewer: str,
        digest: str,
        decision_id: str | None,
        scope: str,
        n: int,
        now: int,
        data: st.DataObject,
    ) -> None:
        record = self.ledger.records.get(approval)
        payload: dict[str, Any] = {"approval_id": approval, "reviewer": reviewer}
        if decision_id:
            payload["decision_id"] = decision_id
        if digest == "current" and record is not None:
            payload["action_digest"] = current_digest(record)
        elif digest == "proposed" and record is not None:
            payload["action_digest"] = record.action_digest
        elif digest == "stale":
            payload["action_digest"] = "0" * 16
        if kind is DecisionKind.APPROVE and scope != "once":
            payload["scope"] = scope
        if kind is DecisionKind.MODIFY:
            payload["args"] = {"n": n}
        self._receive(kind, payload)
        if now:  # mostly the run judges at once; sometimes decisions queue up first
            while self.ledger.inbox.get(approval):
                self._judge(approval, data)

    @rule(
        approval=approvals,
        reviewers=st.permutations(REVIEWERS),
        modify_first=st.booleans(),
        data=st.data(),
    )
    def vote_round(
        self, approval: str, reviewers: list[str], modify_first: bool, data: st.DataObject
    ) -> None:
        """Every reviewer decides on the action as it is now, one after another."""
        for n, reviewer in enumerate(reviewers):
            record = self.ledger.records[approval] if approval in self.ledger.records else None
            if record is None:
                return
            payload = {"approval_id": approval, "reviewer": reviewer}
            payload["action_digest"] = current_digest(record)
            kind = DecisionKind.APPROVE
            if modify_first and n == 0:
                kind, payload["args"] = DecisionKind.MODIFY, {"n": 5}
            self._receive(kind, payload)
            while self.ledger.inbox.get(approval):
                self._judge(approval, data)

    @rule(approval=approvals, scope=st.sampled_from(["action", "tool"]), data=st.data())
    def grant(self, approval: str, scope: str, data: st.DataObject) -> None:
        """A standing approval: it decides the same action (or tool) from now on."""
        payload = {"approval_id": approval, "reviewer": "ann", "scope": scope}
        self._receive(DecisionKind.APPROVE, payload)
        while self.ledger.inbox.get(approval):
            self._judge(approval, data)

    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """The same payload again (the signal after its update), or under another kind."""
        if not self.sent:
            return
        kind, payload = data.draw(st.sampled_from(self.sent))
        self._receive(kind, dict(payload))

    @rule(
        kind=st.sampled_from(DECISION_KINDS),
        junk=st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=5),
            st.dictionaries(st.sampled_from(["approval_id", "reviewer", "kind", "x"]), st.text()),
        ),
    )
    def junk(self, kind: DecisionKind, junk: Any) -> None:
        self._receive(kind, junk)

    @rule(approval=approvals, reviewer=st.sampled_from(REVIEWERS))
    def revoke(self, approval: str, reviewer: str) -> None:
        self._receive(DecisionKind.REVOKE, {"approval_id": approval, "reviewer": reviewer})

    @precondition(lambda self: bool(self.ledger.revocations))
    @rule(data=st.data())
    def judge_revocation(self, data: st.DataObject) -> None:
        item = self.ledger.next_revocation()
        assert item is not None
        standing = self.ledger.standing[item.decision.approval_id]
        was_revoked = standing.revoked_at is not None
        drive(self.ledger.revoke(item, self.now), self._answer(data))
        assert item.entry is not None
        event(f"revocation: {item.entry.code or item.entry.outcome}")
        if was_revoked:
            assert item.entry.code == RefusalCode.ALREADY_DECIDED
        if item.entry.outcome == "applied":
            assert standing.revoked_at is not None

    @precondition(lambda self: any(self.ledger.inbox.values()))
    @rule(data=st.data())
    def judge_next(self, data: st.DataObject) -> None:
        approval = data.draw(st.sampled_from([k for k, v in self.ledger.inbox.items() if v]))
        self._judge(approval, data)

    def _judge(self, approval: str, data: st.DataObject) -> None:
        """The adapter's turn on one approval: judge the next decision queued on it."""
        record = self.ledger.records[approval]
        assert record.status is ApprovalStatus.PENDING, "a settled approval has no queue"
        item = self.ledger.next_decision(approval)
        assert item is not None
        digest_before = current_digest(record)
        votes_before = {v.reviewer for v in record.votes if v.action_digest == digest_before}
        logged_before = [id(e) for e in record.decisions]
        drive(self.ledger.judge(item, self.now), self._answer(data))
        assert item.entry is not None, "every judged decision ends as an entry"
        entry = item.entry
        twin = id(entry) in logged_before
        event(f"judged: {'twin' if twin else entry.code or entry.note or entry.outcome}")
        if record.status is not ApprovalStatus.PENDING and record.quorum > 1 and not twin:
            event("a quorum decided")
        if twin:  # answered with the first copy's entry, and nothing logged again
            assert len(record.decisions) == len(logged_before)
            assert entry.decision_id == item.decision.decision_id
            assert entry.payload_digest == payload_digest(item.fields)
        elif item.received_at >= record.expires_at:
            assert entry.code in (RefusalCode.LATE, RefusalCode.REUSED_DECISION_ID, "malformed")
        elif item.decision is not None and item.decision.action_digest not in (None, digest_before):
            assert entry.code in (RefusalCode.STALE_ACTION, RefusalCode.REUSED_DECISION_ID)
        if not twin and entry.outcome == "applied":
            decision = item.decision
            assert decision is not None
            if decision.action_digest is not None:
                assert decision.action_digest == digest_before, "a stale digest never applies"
            assert item.received_at < record.expires_at, "a late decision never applies"
            if record.quorum > 1 and entry.kind is DecisionKind.APPROVE:
                assert decision.reviewer not in votes_before, "one vote per reviewer"
        self._after(approval)

    @rule(minutes=st.sampled_from([1, 1, 2, 3, 5, 30]))
    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @precondition(
        lambda self: any(
            r.status is ApprovalStatus.PENDING
            and self.now >= r.expires_at
            and not self.ledger.inbox[r.id]
            for r in self.ledger.records.values()
        )
    )
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """The timer fired and nothing waits to be judged (the adapter judges first)."""
        due = [
            r.id
            for r in self.ledger.records.values()
            if r.status is ApprovalStatus.PENDING
            and self.now >= r.expires_at
            and not self.ledger.inbox[r.id]
        ]
        approval = data.draw(st.sampled_from(due))
        self.ledger.expire(approval, self.now)
        record = self.ledger.records[approval]
        assert record.status is ApprovalStatus.REJECTED
        assert record.reviewer == policy.TIMEOUT_REVIEWER
        assert record.decisions[-1].kind is DecisionKind.TIMEOUT
        self._after(approval)
        self.ledger.remember_rejection(record)

    @precondition(lambda self: not self.ledger.waiting())
    @rule()
    def continue_as_new(self) -> None:
        """Carry the ledger to a new run: pending approvals, standing grants, rejections."""
        state = GateState.model_validate_json(self.ledger.snapshot().model_dump_json())
        modifiable = dict(self.ledger.modifiable)
        carried = Ledger(state, logger=QUIET)
        for approval in carried.records:
            carried.modifiable[approval] = modifiable.get(approval, False)
        assert set(carried.records) == set(self._pending())
        assert carried.approvals_total == self.ledger.approvals_total
        self.ledger = carried
        self.items = [i for i in self.items if i.approval_id in carried.records]
        self.sent = [(k, p) for k, p in self.sent if p.get("approval_id") in carried.records]

    # --- invariants ---

    @invariant()
    def settled_approvals_never_change(self) -> None:
        for record in self.ledger.records.values():
            if record.status is ApprovalStatus.PENDING:
                assert record.id not in self.settled
                continue
            seen = (record.status, record.reviewer, record.reviewed_at, record.reason)
            assert self.settled.setdefault(record.id, seen) == seen

    @invariant()
    def every_decision_ends_as_one_entry(self) -> None:
        queued = {id(i) for items in self.ledger.inbox.values() for i in items}
        queued |= {id(i) for i in self.ledger.revocations}
        for item in self.items:
            if id(item) in queued:
                assert item.entry is None
                continue
            assert item.entry is not None, "a decision out of the queue has its entry"
            if item.entry.outcome == "refused":
                assert item.entry.code, "a refused entry always has its code"

    @invariant()
    def logs_are_bounded_and_coded(self) -> None:
        for record in self.ledger.records.values():
            refused = [e for e in record.decisions if e.outcome == "refused"]
            assert len(refused) <= MAX_REFUSED_PER_APPROVAL
            assert all(e.code for e in refused)
            applied = [
                e
                for e in record.decisions
                if e.outcome == "applied" and e.note is None and e.kind is not DecisionKind.REVOKE
            ]
            assert len(applied) <= 1, "one decision settles an approval"
            if applied:
                assert record.status is not ApprovalStatus.PENDING
        assert len(self.ledger.refused) <= MAX_REFUSED_PER_RUN
        assert all(r.code for r in self.ledger.refused)

    @invariant()
    def a_quorum_needs_that_many_people(self) -> None:
        for record in self.ledger.records.values():
            if record.quorum > 1 and record.status in (
                ApprovalStatus.APPROVED,
                ApprovalStatus.MODIFIED,
            ):
                digest = current_digest(record)
                voters = {v.reviewer for v in record.votes if v.action_digest == digest}
                assert len(voters) >= record.quorum
                assert record.standing is None

    @invariant()
    def a_rule_decides_only_as_it_said_and_says_so(self) -> None:
        for record in self.ledger.records.values():
            if record.rule is None:
                continue
            assert record.reviewer == policy.POLICY_REVIEWER and record.outcome == "auto"
            assert record.decisions[0].kind is DecisionKind.POLICY
            assert record.rule.rule in (record.reason or "")
            if record.rule.verdict == "approve":
                assert record.status is ApprovalStatus.APPROVED and record.quorum == 1
            else:
                assert record.rule.verdict == "deny"
                assert record.status is ApprovalStatus.REJECTED

    @invariant()
    def standing_approvals_come_from_single_approvals(self) -> None:
        for standing in self.ledger.standing.values():
            record = self.ledger.records.get(standing.id)
            if record is not None:
                assert record.quorum == 1
                assert record.status is ApprovalStatus.APPROVED


LedgerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase


# --- one refusal code each -------------------------------------------------------------------


EFFECTS = ("approve", "deny")


def verdict_of(verdict: str | None) -> RuleVerdict | None:
    if verdict is None:
        return None
    return RuleVerdict(
        rule=f"{verdict}-rule", verdict=verdict, reason=f"the {verdict} rule", policy_digest="d1"
    )


def opened(
    book: Ledger, *, quorum: int = 1, modifiable: bool = True, minutes: int = 10, n: int = 1
) -> str:
    record = book.open(
        ToolAction(tool="delete_files", args={"n": n}),
        approval_id=f"apr_{len(book.records) + 1}",
        now=T0,
        timeout=timedelta(minutes=minutes),
        risk=40,
        modifiable=modifiable,
        quorum=quorum,
    )
    return record.id


def decide(
    book: Ledger,
    kind: DecisionKind,
    payload: dict[str, Any],
    at: datetime | None = None,
    answer: Any = None,
) -> Any:
    """Receive one decision and judge it (as the adapter does); its entry."""
    at = at or T0 + timedelta(minutes=1)
    item = book.receive(kind, payload, kind.value, at)
    assert item is not None
    queued = book.next_decision(item.approval_id or "")
    if queued is not None:
        assert queued is item
        drive(book.judge(item, at), answer or accept(at))
        if book.records[item.approval_id or ""].status is not ApprovalStatus.PENDING:
            book.settled(item.approval_id or "", at)
    assert item.entry is not None
    return item.entry


def test_first_decision_wins_and_the_next_is_already_decided() -> None:
    book = ledger()
    approval = opened(book)
    first = decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "ann"})
    assert first.outcome == "applied" and first.code is None
    second = decide(book, DecisionKind.REJECT, {"approval_id": approval, "reviewer": "bob"})
    assert second.code == RefusalCode.ALREADY_DECIDED
    assert f"approval {approval} was already approved by ann" in (second.refusal or "")
    assert book.records[approval].status is ApprovalStatus.APPROVED


def test_a_decision_after_the_timeout_is_refused_as_expired() -> None:
    book = ledger()
    approval = opened(book, minutes=5)
    book.expire(approval, T0 + timedelta(minutes=5))
    record = book.records[approval]
    assert record.reviewer == policy.TIMEOUT_REVIEWER
    assert record.status is ApprovalStatus.REJECTED
    assert "no decision came within 5 min" in (record.reason or "")
    entry = decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "ann"}, T0)
    assert entry.code == RefusalCode.EXPIRED
    assert "timed out at" in (entry.refusal or "")


def test_a_decision_at_the_deadline_is_late_even_while_still_pending() -> None:
    book = ledger()
    approval = opened(book, minutes=5)
    entry = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "ann"},
        at=T0 + timedelta(minutes=5),
    )
    assert entry.code == RefusalCode.LATE
    assert "at or after approval" in (entry.refusal or "")
    assert book.records[approval].status is ApprovalStatus.PENDING


def test_a_stale_digest_is_refused_and_asks_for_nothing() -> None:
    book = ledger()
    approval = opened(book)
    item = book.receive(
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "ann", "action_digest": "f" * 16},
        "approve",
        T0,
    )
    assert item is not None and book.next_decision(approval) is item
    assert drive(book.judge(item, T0), accept(T0)) == []  # refused before any check
    assert item.entry is not None and item.entry.code == RefusalCode.STALE_ACTION
    assert "look at it again" in (item.entry.refusal or "")


def test_modify_on_an_approval_without_a_validator_is_not_modifiable() -> None:
    book = ledger()
    approval = opened(book, modifiable=False)
    entry = decide(
        book, DecisionKind.MODIFY, {"approval_id": approval, "reviewer": "ann", "args": {"n": 2}}
    )
    assert entry.code == RefusalCode.NOT_MODIFIABLE


def test_arguments_the_validator_refuses_are_invalid_arguments() -> None:
    book = ledger()
    approval = opened(book)

    def answer(need: Any) -> Any:
        if isinstance(need, Verify):
            return Verified(T0)
        return Checked(T0, error=ValueError("n must be below 2"))

    entry = decide(
        book,
        DecisionKind.MODIFY,
        {"approval_id": approval, "reviewer": "ann", "args": {"n": 5}},
        answer=answer,
    )
    assert entry.code == RefusalCode.INVALID_ARGUMENTS
    assert "modified arguments are invalid for delete_files: n must be below 2" in (
        entry.refusal or ""
    )
    assert book.records[approval].status is ApprovalStatus.PENDING


def test_the_workers_refusal_is_not_allowed_and_a_failed_check_unverifiable() -> None:
    book = ledger()
    approval = opened(book)
    refused = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "mallory"},
        answer=lambda need: Verified(T0, Refusal(RefusalCode.NOT_ALLOWED, "not a reviewer")),
    )
    assert refused.code == RefusalCode.NOT_ALLOWED and refused.refusal == "not a reviewer"
    down = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "ann"},
        answer=lambda need: Verified(T0, Refusal(RefusalCode.UNVERIFIABLE, "could not")),
    )
    assert down.code == RefusalCode.UNVERIFIABLE
    assert book.records[approval].status is ApprovalStatus.PENDING


def test_a_riskier_modification_is_checked_at_its_own_risk() -> None:
    book = ledger()
    approval = opened(book)
    asked: list[int] = []

    def answer(need: Any) -> Any:
        if isinstance(need, Verify):
            asked.append(need.request.risk)
            if need.request.risk > 50:
                return Verified(T0, Refusal(RefusalCode.NOT_ALLOWED, "ann approves up to 50"))
            return Verified(T0)
        return Checked(T0, modification=Modification({"n": 9}, risk=90))

    entry = decide(
        book,
        DecisionKind.MODIFY,
        {"approval_id": approval, "reviewer": "ann", "args": {"n": 9}},
        answer=answer,
    )
    assert asked == [40, 90]
    assert entry.code == RefusalCode.RISKIER
    assert entry.refusal == "the modified action scores risk 90: ann approves up to 50"
    assert book.records[approval].risk == 40


def test_a_quorum_needs_distinct_reviewers() -> None:
    book = ledger()
    approval = opened(book, quorum=2)
    first = decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "ann"})
    assert first.outcome == "applied" and first.note == "1 of 2 approvals"
    again = decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "ann"})
    assert again.code == RefusalCode.DUPLICATE_VOTE
    standing = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "bob", "scope": "tool"},
    )
    assert standing.code == RefusalCode.NOT_APPLICABLE
    second = decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "bob"})
    assert second.outcome == "applied" and second.note == "2 of 2 approvals"
    record = book.records[approval]
    assert record.status is ApprovalStatus.APPROVED and record.reviewer == "ann, bob"


def test_a_modification_restarts_the_count_and_names_a_new_digest() -> None:
    book = ledger()
    approval = opened(book, quorum=2)
    decide(book, DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "ann"})
    decide(
        book, DecisionKind.MODIFY, {"approval_id": approval, "reviewer": "bob", "args": {"n": 0}}
    )
    record = book.records[approval]
    assert [v.reviewer for v in record.votes] == ["bob"]
    proposed = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "ann", "action_digest": record.action_digest},
    )
    assert proposed.code == RefusalCode.STALE_ACTION
    current = decide(
        book,
        DecisionKind.APPROVE,
        {"approval_id": approval, "reviewer": "ann", "action_digest": current_digest(record)},
    )
    assert current.outcome == "applied"
    assert record.status is ApprovalStatus.MODIFIED
    assert record.effective_action.args == {"n": 0}


def test_a_twin_is_answered_with_the_first_entry_and_a_reused_id_is_refused() -> None:
    book = ledger()
    approval = opened(book, quorum=2)
    payload = {"approval_id": approval, "reviewer": "ann", "decision_id": "d1"}
    first = decide(book, DecisionKind.APPROVE, payload)
    twin = decide(book, DecisionKind.APPROVE, dict(payload))
    assert twin is first
    reused = decide(book, DecisionKind.APPROVE, {**payload, "reviewer": "bob"})
    assert reused.code == RefusalCode.REUSED_DECISION_ID
    assert len(book.records[approval].decisions) == 2


def test_standing_approvals_decide_at_once_until_revoked() -> None:
    book = ledger()
    first = opened(book)
    decide(book, DecisionKind.APPROVE, {"approval_id": first, "reviewer": "ann", "scope": "tool"})
    second = book.records[opened(book, n=2)]
    assert second.status is ApprovalStatus.APPROVED and second.standing == first
    assert "standing approval" in (second.reason or "")
    assert book.standing_grantors("delete_files") == ["ann"]
    lapsed = book.open(
        ToolAction(tool="delete_files", args={"n": 3}),
        approval_id="apr_lapsed",
        now=T0,
        lapsed={"ann": "removed"},
    )
    assert lapsed.status is ApprovalStatus.PENDING

    item = book.receive(
        DecisionKind.REVOKE, {"approval_id": first, "reviewer": "ann"}, "revoke", T0
    )
    assert item is not None and book.next_revocation() is item
    drive(book.revoke(item, T0), accept(T0))
    assert item.entry is not None and item.entry.outcome == "applied"
    assert book.standing_grantors("delete_files") == []
    third = book.records[opened(book, n=4)]
    assert third.status is ApprovalStatus.PENDING

    again = book.receive(
        DecisionKind.REVOKE, {"approval_id": first, "reviewer": "ann"}, "revoke", T0
    )
    assert again is not None and book.next_revocation() is again
    assert drive(book.revoke(again, T0), accept(T0)) == []
    assert again.entry is not None and again.entry.code == RefusalCode.ALREADY_DECIDED


def test_revoking_what_is_not_standing() -> None:
    book = ledger()
    approval = opened(book)
    assert (
        book.receive(DecisionKind.REVOKE, {"approval_id": approval, "reviewer": "a"}, "r", T0)
        is None
    )
    assert (
        book.receive(DecisionKind.REVOKE, {"approval_id": "apr_x", "reviewer": "a"}, "r", T0)
        is None
    )
    assert [r.code for r in book.refused] == [
        RefusalCode.NOT_APPLICABLE,
        RefusalCode.UNKNOWN_APPROVAL,
    ]


def test_policy_never_stands_in_for_a_quorum() -> None:
    book = ledger()
    approval = opened(book, quorum=2)
    assert not book.approve_by_policy(approval, "low risk", T0)
    assert book.records[approval].status is ApprovalStatus.PENDING
    single = opened(book)
    assert book.approve_by_policy(single, "low risk", T0)
    assert book.records[single].reviewer == policy.POLICY_REVIEWER


@pytest.mark.parametrize(
    ("payload", "code", "words"),
    [
        ([1, 2], RefusalCode.MALFORMED, "expected a JSON object"),
        ({"approval_id": "apr_1"}, RefusalCode.MALFORMED, "malformed approve decision"),
        (
            {"approval_id": "apr_1", "reviewer": "a", "kind": "reject"},
            RefusalCode.MALFORMED,
            "send each decision as the signal it means",
        ),
        ({"approval_id": "apr_1", "reviewer": "a\udc9b"}, RefusalCode.MALFORMED, "surrogate"),
        ({"approval_id": "nope", "reviewer": "a"}, RefusalCode.UNKNOWN_APPROVAL, "unknown"),
    ],
)
def test_unreadable_decisions_are_refused_with_their_code(
    payload: Any, code: RefusalCode, words: str
) -> None:
    book = ledger()
    opened(book)
    item = book.receive(DecisionKind.APPROVE, payload, "approve", T0)
    if item is None:  # named nothing here: the run's own list
        refusal = book.refused[-1]
        assert refusal.code == code and words in refusal.refusal
    else:  # named the approval: its log, in its turn
        assert book.next_decision("apr_1") is item
        drive(book.judge(item, T0), accept(T0))
        assert item.entry is not None and item.entry.code == code
        assert words in (item.entry.refusal or "")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ("text", RefusalCode.MALFORMED),
        ({"kind": "timeout", "approval_id": "apr_1", "reviewer": "a"}, RefusalCode.MALFORMED),
        ({"kind": "approve", "approval_id": "apr_1"}, RefusalCode.MALFORMED),
        (
            {"kind": "approve", "approval_id": "apr_9", "reviewer": "a"},
            RefusalCode.UNKNOWN_APPROVAL,
        ),
        ({"kind": "revoke", "approval_id": "apr_1", "reviewer": "a"}, RefusalCode.NOT_APPLICABLE),
        ({"kind": "revoke", "approval_id": "apr_9", "reviewer": "a"}, RefusalCode.UNKNOWN_APPROVAL),
    ],
)
def test_the_update_refuses_what_it_cant_take_in(payload: Any, code: RefusalCode) -> None:
    book = ledger()
    opened(book)
    refusal = book.readable(payload)
    assert refusal is not None and refusal.code is code
    assert book.readable({"kind": "approve", "approval_id": "apr_1", "reviewer": "a"}) is None


def test_refused_decisions_are_bounded_per_approval_and_per_run() -> None:
    book = ledger()
    approval = opened(book)
    for n in range(MAX_REFUSED_PER_APPROVAL + 5):
        decide(
            book,
            DecisionKind.APPROVE,
            {"approval_id": approval, "reviewer": f"r{n}", "action_digest": "0" * 16},
        )
    record = book.records[approval]
    assert len(record.decisions) == MAX_REFUSED_PER_APPROVAL
    assert record.refused_dropped == 5
    for _ in range(MAX_REFUSED_PER_RUN + 3):
        book.receive(DecisionKind.APPROVE, {"approval_id": "x", "reviewer": "a"}, "approve", T0)
    assert len(book.refused) == MAX_REFUSED_PER_RUN and book.refused_dropped == 3


def test_decisions_queued_behind_the_winner_are_refused_in_their_turn() -> None:
    book = ledger()
    approval = opened(book)
    items = [
        book.receive(DecisionKind.APPROVE, {"approval_id": approval, "reviewer": r}, "a", T0)
        for r in ("ann", "bob", "cy")
    ]
    winner = book.next_decision(approval)
    assert winner is items[0]
    drive(book.judge(winner, T0), accept(T0))
    book.settled(approval, T0)
    assert [i.entry.code if i and i.entry else "?" for i in items] == [
        None,
        RefusalCode.ALREADY_DECIDED,
        RefusalCode.ALREADY_DECIDED,
    ]


def test_a_rejected_action_is_remembered_across_continue_as_new() -> None:
    book = ledger()
    approval = opened(book)
    decide(book, DecisionKind.REJECT, {"approval_id": approval, "reviewer": "ann", "reason": "no"})
    book.remember_rejection(book.records[approval])
    pending = opened(book, n=7)
    carried = ledger(GateState.model_validate_json(book.snapshot().model_dump_json()))
    assert list(carried.records) == [pending]
    earlier = carried.rejected_earlier(ToolAction(tool="delete_files", args={"n": 1}))
    assert earlier is not None and earlier.reason == "no" and earlier.reviewer == "ann"
    assert carried.approvals_total == 2


def test_the_ledger_is_pure() -> None:
    """No Temporal, no I/O modules: it runs anywhere, and in a workflow's sandbox."""
    import subprocess
    import sys

    probe = (
        "import sys, hitl.ledger; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('temporalio', 'httpx', 'openai')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out


def test_a_decision_is_applied_when_its_checks_answer() -> None:
    """The record's reviewed_at is when the run applied the decision (after the worker's
    checks), the entry's received_at when it arrived."""
    book = ledger()
    approval = opened(book)
    later = T0 + timedelta(minutes=1, seconds=3)
    entry = decide(
        book,
        DecisionKind.MODIFY,
        {"approval_id": approval, "reviewer": "ann", "args": {"n": 0}},
        at=T0 + timedelta(minutes=1),
        answer=accept(later),
    )
    record = book.records[approval]
    assert entry.received_at == T0 + timedelta(minutes=1)
    assert record.reviewed_at == later and record.status is ApprovalStatus.MODIFIED


# --- expiry apart from a person's rejection, escalation state (issue 19) -----------------------


def test_expiry_is_recorded_apart_from_a_persons_rejection() -> None:
    book = ledger()
    expired, rejected = opened(book, minutes=5), opened(book, n=2)
    book.expire(expired, T0 + timedelta(minutes=5))
    decide(book, DecisionKind.REJECT, {"approval_id": rejected, "reviewer": "ann"})
    assert book.records[expired].expired and book.records[expired].state_word == "expired"
    assert book.records[expired].status is ApprovalStatus.REJECTED  # the contract's status
    assert not book.records[rejected].expired
    assert book.records[rejected].state_word == "rejected"


def test_a_record_from_an_older_run_is_recognised_as_expired_by_its_reviewer() -> None:
    book = ledger()
    approval = opened(book, minutes=5)
    book.expire(approval, T0 + timedelta(minutes=5))
    old = book.records[approval].model_dump(mode="json")
    del old["expired"]  # as a run made before the field recorded it
    assert ApprovalRecord.model_validate(old).expired
    person = {**old, "reviewer": "ann"}
    assert not ApprovalRecord.model_validate(person).expired


def test_escalation_lets_the_group_decide_only_from_when_it_was_asked() -> None:
    book = ledger()
    approval = opened(book)
    early = T0 + timedelta(minutes=1)
    item = book.receive(
        DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "cy"}, "approve", early
    )
    assert item is not None and book.next_decision(approval) is item
    judging = book.judge(item, early)
    need = next(judging)
    assert isinstance(need, Verify) and need.request.escalated_to == []
    judging.close()
    step = book.escalate(approval, ["cy", "cy", "bob"], T0 + timedelta(minutes=5))
    assert step is not None and step.to == ["cy", "bob"]
    record = book.records[approval]
    assert record.escalated_to == ["cy", "bob"]
    # A decision sent before the escalation is judged as its reviewer's own.
    assert escalated_by(record, early) == []
    assert escalated_by(record, T0 + timedelta(minutes=5)) == ["cy", "bob"]
    later = T0 + timedelta(minutes=6)
    item = book.receive(
        DecisionKind.APPROVE, {"approval_id": approval, "reviewer": "cy"}, "approve", later
    )
    assert item is not None
    need = next(book.judge(item, later))
    assert isinstance(need, Verify) and need.request.escalated_to == ["cy", "bob"]


def test_extension_happens_once_bounded_and_never_after_a_decision() -> None:
    book = ledger()
    approval = opened(book, minutes=10)
    deadline = T0 + timedelta(minutes=10)
    assert book.extend(approval, timedelta(days=30), deadline)
    record = book.records[approval]
    assert record.expires_at == deadline + timedelta(seconds=MAX_EXTEND_SECONDS)
    assert not book.extend(approval, timedelta(minutes=5), record.expires_at)  # once only
    book.expire(approval, record.expires_at)
    assert record.expired and [s.kind for s in record.escalations] == ["extended"]
    assert book.escalate(approval, ["bob"], record.expires_at) is None  # decided: nothing
    other = opened(book, n=2)
    decide(book, DecisionKind.APPROVE, {"approval_id": other, "reviewer": "ann"})
    assert not book.extend(other, timedelta(minutes=5), deadline)
    assert not book.records[other].expired


def test_a_run_may_only_make_the_escalation_policy_stricter() -> None:
    worker = EscalationPolicy(
        remind_at=[0.5],
        escalate_after_seconds=1200,
        to=["olga"],
        at_deadline="extend",
        extend_by_seconds=600,
    )
    looser = EscalationPolicy(
        escalate_after_seconds=10,
        to=["mallory"],
        at_deadline="extend",
        extend_by_seconds=float("inf"),
        remind_at=[0.9, float("nan")],
    )
    merged, notes = policy.stricter_escalation(worker, looser)
    assert merged is not None
    assert merged.to == ["olga"] and merged.escalate_after_seconds == 1200
    # An infinite extension is no time: the run gets no extension at all.
    assert merged.at_deadline == "reject" and merged.extend_by_seconds == 0
    assert merged.remind_at == [0.5, 0.9]
    assert any("worker's escalation policy applies" in note for note in notes)
    stricter, _ = policy.stricter_escalation(worker, EscalationPolicy(at_deadline="reject"))
    assert stricter is not None and stricter.at_deadline == "reject"
    shorter, _ = policy.stricter_escalation(
        worker, EscalationPolicy(at_deadline="extend", extend_by_seconds=60)
    )
    assert shorter is not None and shorter.extend_by_seconds == 60
    none, notes = policy.stricter_escalation(
        None, EscalationPolicy(at_deadline="extend", extend_by_seconds=60, to=["x"])
    )
    assert none is None and notes


def test_a_rule_approves_decides_and_names_itself_but_never_a_quorum() -> None:
    book = ledger()
    rule = verdict_of("approve")
    assert rule is not None
    record = book.open(
        ToolAction(tool="delete_files", args={"n": 1}), approval_id="a1", now=T0, rule=rule
    )
    assert record.status is ApprovalStatus.APPROVED and record.rule == rule
    [entry] = record.decisions
    assert entry.kind is DecisionKind.POLICY and entry.reviewer == policy.POLICY_REVIEWER
    assert record.reason == "approved by rule approve-rule (rules d1): the approve rule"
    quorum = book.open(
        ToolAction(tool="delete_files", args={"n": 2}),
        approval_id="a2",
        now=T0,
        rule=rule,
        quorum=2,
    )
    assert quorum.status is ApprovalStatus.PENDING and quorum.rule is None
    assert not book.by_rule("a2", rule, T0)


def test_a_rule_deny_rejects_with_its_reason_before_any_standing_approval() -> None:
    book = ledger()
    first = opened(book)
    decide(book, DecisionKind.APPROVE, {"approval_id": first, "reviewer": "ann", "scope": "tool"})
    denied = book.open(
        ToolAction(tool="delete_files", args={"n": 9}),
        approval_id="d1",
        now=T0,
        rule=verdict_of("deny"),
    )
    assert denied.status is ApprovalStatus.REJECTED and denied.standing is None
    assert denied.reason == "the deny rule; by rule deny-rule (rules d1)"
    assert book.outcome("d1").reason == denied.reason  # what the agent is told
    assert book.records[first].standing is None


def test_a_shadow_verdict_is_recorded_and_decides_nothing() -> None:
    book = ledger()
    shadow = verdict_of("approve")
    record = book.open(
        ToolAction(tool="delete_files", args={"n": 1}), approval_id="s1", now=T0, shadow=shadow
    )
    assert record.status is ApprovalStatus.PENDING and record.shadow == shadow
    assert record.rule is None and record.decisions == []
    decide(book, DecisionKind.REJECT, {"approval_id": "s1", "reviewer": "ann", "reason": "no"})
    assert record.outcome == "rejected" and record.shadow == shadow
