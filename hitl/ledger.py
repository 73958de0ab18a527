"""The decision ledger: a run's approvals and every decision on them, judged.

Pure: no temporalio, no I/O, no clock. The gate (`hitl.gate.ApprovalGate`, the Temporal
adapter) passes in the time (`now`) and what only a worker can tell: whether the
worker's checks accept a decision (signature, reviewer rules, the `verify_decision`
activity) and what the tool's validator makes of modified arguments. Judging is a
generator: it yields what it needs (`Verify`, `CheckArgs`) and is sent the answer
(`Verified`, `Checked`), so the ledger stays synchronous and every rule is here once,
testable in milliseconds (tests/test_ledger.py).

Every decision received ends as exactly one entry: applied, or refused with a
`RefusalCode` and a sentence, in its approval's log (bounded: MAX_REFUSED_PER_APPROVAL)
or, when it names no approval of the run, in the run's unattached refusals (bounded:
MAX_REFUSED_PER_RUN).

`patched` answers whether a recorded behaviour change applies to this run (the adapter
passes the gate's, which decides today's rules in the run's first workflow task and asks
`workflow.patched` for runs made before that); it is asked at the same points, in the same
order, as the gate always did, so recorded histories replay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from hitl import policy
from hitl.decisions import DECISION_MODELS, RefusalCode, current_digest
from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    EXCERPT_CHARS,
    MAX_DECISION_BYTES,
    MAX_EXTEND_SECONDS,
    MAX_REFUSED_PER_APPROVAL,
    MAX_REFUSED_PER_RUN,
    ApprovalContext,
    ApprovalOutcome,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    DecisionCheckRequest,
    DecisionEntry,
    DecisionKind,
    Escalation,
    EscalationPolicy,
    GateState,
    ModifyDecision,
    RefusedDecision,
    RejectDecision,
    RejectedAction,
    RuleVerdict,
    StandingApproval,
    ToolAction,
    ToolPreview,
    Vote,
    payload_digest,
)
from hitl.text import clip, lone_surrogate, quoted

PATCH_QUEUED_ANSWERED = "hitl-queued-decisions-answered"
"""From here on a decision queued behind the one that settled its approval gets its
refusal as its answer (a `decide` update ends instead of waiting for ever)."""
PATCH_MODIFIED_RISK = "hitl-modified-risk-checked"
"""From here on a modification riskier than the proposed action is checked against the
reviewer's limits, and the quorum, at its own risk."""
PATCH_TRUST = "hitl-trust-boundaries"
"""From here on the policy comes from the worker (its tools and reviewers file; a run's
input only makes it stricter), the requester from a verified start, a standing approval
on a tool covers only calls of the same scope key, policy never stands in for a quorum,
and a modification keeps what the reviewer wrote."""
MAX_REMEMBERED_REJECTIONS = 200

DECISION_KINDS = (
    DecisionKind.APPROVE,
    DecisionKind.REJECT,
    DecisionKind.MODIFY,
    DecisionKind.REVOKE,
)
"""The kinds a reviewer may send (the others are the run's own)."""

Patched = Callable[[str], bool]


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True)
class Refusal:
    """Why a decision was refused: a stable code, and a sentence a reviewer can act on."""

    code: RefusalCode
    sentence: str


@dataclass(frozen=True)
class Modification:
    """A reviewer's modified arguments as checked: normalized, with their own preview."""

    args: dict[str, Any]
    preview: ToolPreview | None = None
    risk: int | None = None
    """The modified action's own risk, when the validator knows it (a tool's check does)."""
    quorum: int | None = None
    """The approvers the modified action needs, when the validator knows it."""


# --- what judging needs, and is answered -------------------------------------------------


@dataclass(frozen=True)
class Verify:
    """Ask the worker whether it accepts this decision (signature, reviewer rules)."""

    request: DecisionCheckRequest


@dataclass(frozen=True)
class CheckArgs:
    """Check a reviewer's modified arguments with the tool's validator."""

    args: dict[str, Any]
    approval_id: str | None = None


Need = Verify | CheckArgs


@dataclass(frozen=True)
class Verified:
    """The worker's answer to `Verify`: None accepts."""

    now: datetime
    refusal: Refusal | None = None


@dataclass(frozen=True)
class Checked:
    """The validator's answer to `CheckArgs`: the checked arguments, or what it raised."""

    now: datetime
    modification: Modification | None = None
    error: Exception | None = None


Answer = Verified | Checked
Judging = Generator[Need, Answer, None]


@dataclass
class Incoming:
    """One decision as received, until it is logged (then `entry` is set)."""

    kind: DecisionKind
    decision: Any
    received_at: datetime
    refused: DecisionEntry | None = None
    """Already refused on arrival (unreadable): logged in its turn, so the log keeps order."""
    fields: dict[str, Any] = field(default_factory=dict)
    """The payload as it came: what a signature was made over."""
    entry: DecisionEntry | None = None
    """Set once the decision is logged, for an update waiting on its outcome."""
    approval_id: str | None = None
    """The approval (or, for a revoke, the standing approval) it names, once known."""


# --- the rules that need only a record -------------------------------------------------------


def escalated_by(record: ApprovalRecord, at: datetime) -> list[str]:
    """Who the approval had been escalated to by `at` (a decision counts from when it
    arrived: one sent before the escalation is judged as its reviewer's own)."""
    names: list[str] = []
    for step in record.escalations:
        if step.kind == "escalated" and step.at <= at:
            names.extend(name for name in step.to if name not in names)
    return names


def decided_refusal(record: ApprovalRecord) -> Refusal:
    """Why a decision can't change an approval that is no longer pending."""
    if record.reviewer == policy.TIMEOUT_REVIEWER:
        return Refusal(
            RefusalCode.EXPIRED,
            f"approval {record.id} timed out at {record.expires_at.isoformat()} and was "
            "auto-rejected; a decision can no longer change it",
        )
    when = record.reviewed_at.isoformat() if record.reviewed_at else "an earlier time"
    return Refusal(
        RefusalCode.ALREADY_DECIDED,
        f"approval {record.id} was already {record.status.value} by "
        f"{quoted(record.reviewer or 'unknown')} at {when}",
    )


@dataclass(frozen=True)
class Verdict:
    """What the record alone says of a decision: refused, or go on (a `modify` then has
    its arguments checked by the tool: `check_args`)."""

    refusal: Refusal | None = None
    check_args: dict[str, Any] | None = None


def precheck(
    record: ApprovalRecord,
    decision: ApproveDecision | RejectDecision | ModifyDecision,
    received_at: datetime,
    modifiable: bool,
) -> Verdict:
    """First valid decision wins; everything else is refused with a reason to act on.

    A decision counts from when it arrived: one that arrived before the deadline is
    judged even if its turn comes later; one at or after the deadline is late.
    """
    if record.status is not ApprovalStatus.PENDING:
        return Verdict(refusal=decided_refusal(record))
    if received_at >= record.expires_at:
        return Verdict(
            refusal=Refusal(
                RefusalCode.LATE,
                f"the decision arrived at {received_at.isoformat()}, at or after approval "
                f"{record.id}'s deadline {record.expires_at.isoformat()}; it is auto-rejected",
            )
        )
    current = current_digest(record)
    if decision.action_digest is not None and decision.action_digest != current:
        return Verdict(
            refusal=Refusal(
                RefusalCode.STALE_ACTION,
                f"the decision names action {quoted(decision.action_digest)}, but approval "
                f"{record.id} is for action {current}; look at it again and decide on what "
                "it is now",
            )
        )
    if isinstance(decision, ModifyDecision):
        if not modifiable:
            return Verdict(
                refusal=Refusal(
                    RefusalCode.NOT_MODIFIABLE,
                    f"approval {record.id} does not take modified arguments; approve or reject it",
                )
            )
        return Verdict(check_args=decision.args)
    return Verdict()


def modification_refusal(record: ApprovalRecord, error: Exception) -> Refusal:
    """Why a reviewer's modified arguments were not taken, from what the check raised."""
    if isinstance(error, ValidationError):
        detail = policy.format_validation_error(error)
    elif isinstance(error, ValueError):
        detail = str(error)
    else:
        return Refusal(
            RefusalCode.UNVERIFIABLE,
            f"modified arguments could not be checked for {record.action_json.tool} "
            f"({type(error).__name__}: {error}); the approval is still pending",
        )
    return Refusal(
        RefusalCode.INVALID_ARGUMENTS,
        f"modified arguments are invalid for {record.action_json.tool}: {detail}; the "
        "approval is still pending",
    )


def read_refusal(kind: DecisionKind, name: str, value: Any, size: int) -> Refusal | None:
    """Why a decoded payload can't be read as a decision at all (shape, size, encoding)."""
    sentence = None
    if lone_surrogate(value) is not None:
        sentence = (
            f"the {name} payload contains text that is not valid Unicode (a lone "
            "surrogate escape such as \\udc9b); send it as plain UTF-8 text"
        )
    elif size > MAX_DECISION_BYTES:
        sentence = (
            f"the {name} payload is {size:,} bytes; a decision is at most "
            f"{MAX_DECISION_BYTES:,} bytes"
        )
    elif not isinstance(value, dict):
        sentence = (
            f"malformed {name} decision: expected a JSON object with approval_id and "
            f"reviewer, got {type(value).__name__}"
        )
    elif (sent := value.get("kind")) is not None and sent != kind.value:
        sentence = (
            f"the payload says kind {quoted(sent)} but was sent as {kind.value}; send "
            "each decision as the signal it means"
        )
    return Refusal(RefusalCode.MALFORMED, sentence) if sentence else None


def parse(kind: DecisionKind, fields: dict[str, Any]) -> tuple[Any, Refusal | None]:
    """The payload as the decision model of its kind, or why it isn't one."""
    try:
        return DECISION_MODELS[kind].model_validate(fields), None
    except ValidationError as error:
        return None, Refusal(
            RefusalCode.MALFORMED,
            f"malformed {kind.value} decision: {policy.format_validation_error(error)}",
        )


def scope_text(standing: StandingApproval) -> str:
    if standing.scope == "action":
        return "this exact action"
    return f"{standing.tool} up to risk {standing.max_risk}"


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return clip(value.encode("utf-8", "backslashreplace").decode("utf-8"), 100)


class Ledger:
    """A run's approvals, standing approvals and remembered rejections, and the judge of
    every decision on them.

    `state` restores a ledger carried across continue-as-new (`snapshot`). `dirty` is set
    whenever something a reviewer can see changed; the adapter publishes and clears it.
    """

    def __init__(
        self,
        state: GateState | None = None,
        *,
        patched: Patched = _always,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        state = state or GateState()
        self.records: dict[str, ApprovalRecord] = {record.id: record for record in state.pending}
        self.inbox: dict[str, list[Incoming]] = {record.id: [] for record in state.pending}
        self.modifiable: dict[str, bool] = {}
        self.rejected: dict[str, RejectedAction] = dict(state.rejected)
        self.standing: dict[str, StandingApproval] = {s.id: s for s in state.standing}
        self.revocations: list[Incoming] = []
        self.approvals_total = state.approvals_total
        self.refused: list[RefusedDecision] = []
        self.refused_dropped = 0
        self.dirty = True
        self._patched = patched
        self._logger = logger or logging.getLogger(__name__)

    # --- opening and settling ----------------------------------------------------------------

    def open(
        self,
        action: ToolAction,
        *,
        approval_id: str,
        now: datetime,
        session_id: str = "",
        run_id: str = "",
        preview: ToolPreview | None = None,
        context: ApprovalContext | str | None = None,
        timeout: timedelta | None = None,
        risk: int = 50,
        modifiable: bool = False,
        args_schema: dict[str, Any] | None = None,
        execution_timeout: timedelta | None = None,
        quorum: int = 1,
        scope_key: str | None = None,
        lapsed: Mapping[str, str] | None = None,
        escalation: EscalationPolicy | None = None,
        rule: RuleVerdict | None = None,
        shadow: RuleVerdict | None = None,
    ) -> ApprovalRecord:
        """Record a pending approval. A standing approval that covers it decides it at once
        (except for grantors in `lapsed`, whose grants no longer hold).

        `rule`: the worker's rules' verdict to act on (`by_rule`): a deny rejects at once,
        before any standing approval (the worker's rules are stricter than a grant); an
        approve approves where a standing approval did not. `shadow`: a verdict only
        recorded, beside the decision a person makes."""
        if isinstance(context, str) or context is None:
            context = ApprovalContext(original_request=context or "")
        record = ApprovalRecord(
            id=approval_id,
            session_id=session_id,
            run_id=run_id,
            action_json=action,
            action_digest=action.digest(),
            created_at=now,
            expires_at=now + (timeout or timedelta(seconds=DEFAULT_APPROVAL_TIMEOUT_SECONDS)),
            context=context,
            preview=preview or ToolPreview(summary=f"{action.tool}: no preview"),
            risk=max(0, min(100, int(risk))),
            args_schema=args_schema,
            execution_timeout_seconds=(
                execution_timeout.total_seconds() if execution_timeout is not None else None
            ),
            quorum=max(1, int(quorum)),
            scope_key=scope_key,
            escalation=escalation,
        )
        self.records[record.id] = record
        self.inbox[record.id] = []
        self.modifiable[record.id] = modifiable
        self.approvals_total += 1
        self.dirty = True
        if shadow is not None:
            record.shadow = shadow
        if rule is not None and rule.verdict == "deny":
            self.by_rule(record.id, rule, now)
            return record
        standing = self._standing_for(record, lapsed or {})
        if standing is not None:
            standing.uses += 1
            record.standing = standing.id
            self._settle_by_system(
                record,
                DecisionKind.STANDING,
                ApprovalStatus.APPROVED,
                standing.reviewer,
                f"approved by {standing.reviewer}'s standing approval {standing.id} "
                f"({scope_text(standing)}, for the rest of the run)",
                now,
            )
        elif rule is not None:
            self.by_rule(record.id, rule, now)
        return record

    def by_rule(self, approval_id: str, rule: RuleVerdict, now: datetime) -> bool:
        """Decide a pending approval by one of the worker's auto-approval rules: `deny`
        rejects with the rule's reason (the agent reads it), `approve` approves, never
        standing in for a quorum. The record keeps the verdict (`rule`: which rule, which
        version of the rule set), and its log says so (a `policy` entry naming the rule).
        False when nothing was decided (`ask`, a quorum, no longer pending)."""
        record = self.records[approval_id]
        if record.status is not ApprovalStatus.PENDING or rule.verdict == "ask":
            return False
        named = f"rule {quoted(rule.rule)} (rules {rule.policy_digest or 'unversioned'})"
        if rule.verdict == "deny":
            status, reason = ApprovalStatus.REJECTED, f"{rule.reason or 'denied'}; by {named}"
        elif record.quorum > 1:
            self._logger.warning(
                "Approval %s needs %d approvers; a rule does not approve it",
                record.id,
                record.quorum,
            )
            return False
        else:
            status, reason = ApprovalStatus.APPROVED, f"approved by {named}: {rule.reason}"
        record.rule = rule
        self._settle_by_system(
            record, DecisionKind.POLICY, status, policy.POLICY_REVIEWER, clip(reason, 1_000), now
        )
        return True

    def approve_by_policy(self, approval_id: str, reason: str, now: datetime) -> bool:
        """Decide a pending approval by the run's own policy; False if it can't (decided
        already, or it needs a quorum: a quorum is N people, a policy is none of them)."""
        record = self.records[approval_id]
        if record.status is not ApprovalStatus.PENDING:
            return False
        if record.quorum > 1 and self._patched(PATCH_TRUST):
            self._logger.warning(
                "Approval %s needs %d approvers; policy does not approve it",
                record.id,
                record.quorum,
            )
            return False
        self._settle_by_system(
            record,
            DecisionKind.POLICY,
            ApprovalStatus.APPROVED,
            policy.POLICY_REVIEWER,
            reason,
            now,
        )
        return True

    def escalate(self, approval_id: str, to: list[str], now: datetime) -> Escalation | None:
        """Ask `to` about a pending approval too: from `now` on they may decide it (the
        authorizer is told, `escalated_by`). None when it is no longer pending."""
        record = self.records[approval_id]
        if record.status is not ApprovalStatus.PENDING or not to:
            return None
        step = Escalation(at=now, to=list(dict.fromkeys(to)), kind="escalated")
        record.escalations.append(step)
        self.dirty = True
        return step

    def extend(self, approval_id: str, by: timedelta, now: datetime) -> bool:
        """Hold a pending approval past its deadline once, for `by` (bounded by
        MAX_EXTEND_SECONDS); False when it can't (decided, extended already, no time)."""
        record = self.records[approval_id]
        by = min(by, timedelta(seconds=MAX_EXTEND_SECONDS))
        if (
            record.status is not ApprovalStatus.PENDING
            or by <= timedelta(0)
            or any(step.kind == "extended" for step in record.escalations)
        ):
            return False
        until = max(now, record.expires_at) + by
        record.escalations.append(Escalation(at=now, kind="extended", until=until))
        record.expires_at = until
        self.dirty = True
        return True

    def expire(self, approval_id: str, now: datetime) -> None:
        """The approval's time ran out with no decision: rejected by `system:timeout`,
        recorded as expired (not rejected by a person)."""
        record = self.records[approval_id]
        if record.status is not ApprovalStatus.PENDING:
            return
        record.expired = True
        timeout = record.expires_at - record.created_at
        self._settle_by_system(
            record,
            DecisionKind.TIMEOUT,
            ApprovalStatus.REJECTED,
            policy.TIMEOUT_REVIEWER,
            f"no decision came within {policy.duration_text(timeout)}; auto-rejected at "
            f"{record.expires_at.isoformat()}",
            now,
        )
        self._logger.warning("Approval %s timed out: %s", record.id, record.reason)

    def _settle_by_system(
        self,
        record: ApprovalRecord,
        kind: DecisionKind,
        status: ApprovalStatus,
        reviewer: str,
        reason: str,
        now: datetime,
    ) -> None:
        """A decision the run makes itself (policy, timeout), logged like a reviewer's."""
        record.status, record.reviewer, record.reviewed_at, record.reason = (
            status,
            reviewer,
            now,
            reason,
        )
        record.decisions.append(
            DecisionEntry(
                kind=kind, reviewer=reviewer, reason=reason, received_at=now, outcome="applied"
            )
        )
        self.dirty = True

    def outcome(self, approval_id: str) -> ApprovalOutcome:
        record = self.records[approval_id]
        return ApprovalOutcome(
            approval_id=record.id,
            status=record.status,
            action=record.effective_action,
            reviewer=record.reviewer,
            reason=record.reason,
            timed_out=record.reviewer == policy.TIMEOUT_REVIEWER,
        )

    # --- rejections and standing approvals ------------------------------------------------

    def remember_rejection(self, record: ApprovalRecord) -> None:
        """An identical action asked again in this run (or its continuations) is refused."""
        self.rejected[record.action_json.key()] = RejectedAction(
            approval_id=record.id,
            reviewer=record.reviewer or "unknown",
            reason=clip(record.reason or "", 500),
        )
        while len(self.rejected) > MAX_REMEMBERED_REJECTIONS:
            del self.rejected[next(iter(self.rejected))]

    def rejected_earlier(self, action: ToolAction) -> RejectedAction | None:
        return self.rejected.get(action.key())

    def standing_grantors(self, tool: str) -> list[str]:
        """Who granted the standing approvals of `tool` still in force in this run."""
        return sorted(
            {s.reviewer for s in self.standing.values() if s.tool == tool and not s.revoked_at}
        )

    def _standing_for(
        self, record: ApprovalRecord, lapsed: Mapping[str, str]
    ) -> StandingApproval | None:
        if record.quorum > 1:
            return None
        for standing in self.standing.values():
            if standing.revoked_at is not None or standing.tool != record.action_json.tool:
                continue
            if standing.reviewer in lapsed:
                # The grant is only as good as its grantor is now: removed from the
                # reviewers file, or no longer allowed this, it covers nothing more.
                continue
            if standing.scope == "action" and standing.action_key == record.action_json.key():
                return standing
            if standing.scope == "tool" and record.risk <= standing.max_risk:
                # Same scope key or nothing: a grant on `ls -la` never covers `git`. A
                # record without one (a tool with no `standing_scope`) matches a grant
                # without one.
                if standing.scope_key == record.scope_key or not self._patched(PATCH_TRUST):
                    return standing
        return None

    def _grant(self, record: ApprovalRecord, decision: Any, now: datetime) -> None:
        """An approval that keeps approving: this action, or this tool up to a risk."""
        if not isinstance(decision, ApproveDecision) or decision.scope == "once":
            return
        self.standing[record.id] = StandingApproval(
            id=record.id,
            reviewer=decision.reviewer,
            scope=decision.scope,
            tool=record.action_json.tool,
            action_key=record.action_json.key() if decision.scope == "action" else None,
            max_risk=record.risk if decision.max_risk is None else decision.max_risk,
            scope_key=record.scope_key if decision.scope == "tool" else None,
            granted_at=now,
        )

    # --- receiving ---------------------------------------------------------------------------

    def readable(self, payload: Any) -> Refusal | None:
        """Why a `decide` update can't be taken in at all (unreadable, or naming nothing of
        this run), or None. What can be judged (late, decided, stale, not allowed) is taken
        in and refused into the log instead, so the audit shows the attempt."""
        if not isinstance(payload, dict):
            return Refusal(
                RefusalCode.MALFORMED,
                "a decision is a JSON object with kind, approval_id and reviewer",
            )
        try:
            kind = DecisionKind(str(payload.get("kind")))
        except ValueError:
            kind = None
        if kind not in DECISION_KINDS:
            return Refusal(RefusalCode.MALFORMED, "kind is approve, reject, modify or revoke")
        assert kind is not None
        text = json.dumps(payload, default=str)
        refusal = read_refusal(kind, kind.value, payload, len(text))
        if refusal is None:
            _, refusal = parse(kind, {k: v for k, v in payload.items() if k != "kind"})
        if refusal is not None:
            return refusal
        approval_id = payload.get("approval_id")
        known: Mapping[str, Any] = self.standing if kind is DecisionKind.REVOKE else self.records
        if approval_id not in known:
            if kind is DecisionKind.REVOKE and approval_id in self.records:
                return Refusal(
                    RefusalCode.NOT_APPLICABLE,
                    f"approval {approval_id} granted no standing approval in this run; "
                    "only a standing approval can be revoked",
                )
            return Refusal(
                RefusalCode.UNKNOWN_APPROVAL,
                f"unknown approval id {quoted(approval_id)} in this run",
            )
        return None

    def receive(self, kind: DecisionKind, value: Any, name: str, now: datetime) -> Incoming | None:
        """A decoded decision: queued for its approval (returned), or refused now (None,
        when it names nothing here; an item with its entry set, when it can be refused at
        once)."""
        # ASCII JSON: whatever the payload holds (lone surrogates too), the excerpt kept of
        # it can always be written to history.
        text = json.dumps(value, default=str)
        excerpt, size = clip(text, EXCERPT_CHARS), len(text)
        fields: dict[str, Any] = value if isinstance(value, dict) else {}
        approval_id = fields.get("approval_id")
        record = self.records.get(approval_id) if isinstance(approval_id, str) else None
        refusal = read_refusal(kind, name, value, size)
        decision = None
        if refusal is None:
            decision, refusal = parse(kind, fields)
        if kind is DecisionKind.REVOKE and refusal is None:
            return self._receive_revoke(decision, fields, now, name, (excerpt, size))
        if refusal is not None:
            if record is None:
                self.refuse_unattached(name, refusal, now, (excerpt, size))
                return None
            entry = DecisionEntry(
                decision_id=_text(fields.get("decision_id")),
                kind=kind,
                reviewer=_text(fields.get("reviewer")) or "unknown",
                received_at=now,
                outcome="refused",
                refusal=refusal.sentence,
                code=refusal.code,
                excerpt=excerpt,
            )
            item = Incoming(kind, None, now, entry, fields, approval_id=record.id)
            if record.status is ApprovalStatus.PENDING:
                self.inbox[record.id].append(item)
            else:
                self._log(record, entry, item)
            return item
        if record is None:
            self.refuse_unattached(
                name,
                Refusal(
                    RefusalCode.UNKNOWN_APPROVAL,
                    f"unknown approval id {quoted(approval_id)}: this run's approvals are "
                    f"{self._known_ids()}",
                ),
                now,
                (excerpt, size),
            )
            return None
        item = Incoming(kind, decision, now, fields=dict(fields), approval_id=record.id)
        if record.status is not ApprovalStatus.PENDING:
            if not self._twin(record, item):
                self._log(record, self._entry(item, decided_refusal(record)), item)
            return item
        self.inbox[record.id].append(item)
        return item

    def _receive_revoke(
        self,
        decision: Any,
        fields: dict[str, Any],
        now: datetime,
        name: str,
        payload: tuple[str, int],
    ) -> Incoming | None:
        standing = self.standing.get(decision.approval_id)
        if standing is None:
            known = ", ".join(s.id for s in self.standing.values() if s.revoked_at is None)
            code = (
                RefusalCode.NOT_APPLICABLE
                if decision.approval_id in self.records
                else RefusalCode.UNKNOWN_APPROVAL
            )
            self.refuse_unattached(
                name,
                Refusal(
                    code,
                    f"no standing approval {quoted(decision.approval_id)} in this run; the "
                    f"standing approvals are: {known or 'none'}",
                ),
                now,
                payload,
            )
            return None
        item = Incoming(
            DecisionKind.REVOKE, decision, now, fields=dict(fields), approval_id=standing.id
        )
        self.revocations.append(item)
        return item

    def refuse_unattached(
        self,
        name: str,
        refusal: Refusal,
        now: datetime,
        payload: tuple[str, int] | None = None,
    ) -> None:
        """A decision that names no approval of this run (or can't be read far enough to
        tell): kept in the run's own bounded list."""
        if len(self.refused) >= MAX_REFUSED_PER_RUN:
            self.refused_dropped += 1
        else:
            excerpt, size = payload or ("", 0)
            self.refused.append(
                RefusedDecision(
                    received_at=now,
                    refusal=refusal.sentence,
                    code=refusal.code,
                    signal=clip(name, 100),
                    excerpt=excerpt,
                    size=size,
                )
            )
        self._logger.warning("Refused decision: %s", clip(refusal.sentence, 300))

    def _known_ids(self) -> str:
        pending = [r.id for r in self.records.values() if r.status is ApprovalStatus.PENDING]
        if not self.records:
            return "none yet"
        shown = ", ".join(pending[:10]) or "none pending"
        return f"{shown} ({len(self.records)} in all; `hitl pending` lists them)"

    # --- judging ---------------------------------------------------------------------------

    def next_decision(self, approval_id: str) -> Incoming | None:
        """The decision whose turn it is on this approval, taken off its queue."""
        inbox = self.inbox[approval_id]
        return inbox.pop(0) if inbox else None

    def judge(self, item: Incoming, now: datetime) -> Judging:
        """Judge one decision on a pending approval, in its turn: applied or refused.

        A generator: it yields `Verify` and `CheckArgs` and takes their answers, so the
        caller runs the checks (activities, a tool's validator) and passes the results in.
        """
        record = self.records[item.approval_id or ""]
        if item.refused is not None:
            self._log(record, item.refused, item)
            return
        decision = item.decision
        if self._twin(record, item):
            return
        refusal = self._reused_id(record, decision)
        if refusal is not None:
            self._log(record, self._entry(item, refusal), item)
            return
        modifiable = self.modifiable.get(record.id, False)
        verdict = precheck(record, decision, item.received_at, modifiable)
        refusal, modification = verdict.refusal, None
        if refusal is None:
            answer = yield self._verify(item, record.risk, record)
            now, refusal = answer.now, _refusal_of(answer)
        if refusal is None:
            refusal = self._vote_refusal(record, decision)
        if refusal is None and verdict.check_args is not None and modifiable:
            answer = yield CheckArgs(verdict.check_args, record.id)
            now = answer.now
            if isinstance(answer, Checked) and answer.modification is not None:
                modification = answer.modification
            else:
                error = answer.error if isinstance(answer, Checked) else None
                refusal = modification_refusal(
                    record, error or TypeError("the validator returned nothing")
                )
        if refusal is None and modification is not None:
            refusal, now = yield from self._riskier(record, item, modification, now)
        if refusal is not None:
            self._log(record, self._entry(item, refusal), item)
            return
        if isinstance(decision, RejectDecision):
            self._apply(
                record, item, ApprovalStatus.REJECTED, decision.reason or "no reason given", now
            )
        elif modification is not None:
            record.modified_action_json = ToolAction(
                tool=record.action_json.tool, args=modification.args
            )
            record.modified_preview = modification.preview
            if record.quorum > 1:
                # The count starts again for the new arguments; the modifier's is the first.
                record.votes = [self._vote(record, item)]
            self._count(record, item, ApprovalStatus.MODIFIED, now)
        elif record.quorum > 1:
            record.votes.append(self._vote(record, item))
            self._count(
                record,
                item,
                ApprovalStatus.MODIFIED if record.modified_action_json else ApprovalStatus.APPROVED,
                now,
            )
        else:
            self._apply(record, item, ApprovalStatus.APPROVED, decision.comment or None, now)
            self._grant(record, decision, now)

    @staticmethod
    def _verify(item: Incoming, risk: int, record: ApprovalRecord) -> Verify:
        return Verify(
            DecisionCheckRequest(
                decision=item.fields,
                tool=record.action_json.tool,
                risk=risk,
                requested_by=record.context.requested_by,
                received_at=item.received_at,
                kind=item.kind.value,
                escalated_to=escalated_by(record, item.received_at),
            )
        )

    def _reused_id(self, record: ApprovalRecord, decision: Any) -> Refusal | None:
        if decision.decision_id and any(
            entry.decision_id == decision.decision_id
            # A refused copy (unsigned, altered) of a decision id someone saw on a shared
            # channel doesn't use the id up: only one that took effect does.
            and (entry.outcome == "applied" or not self._patched(PATCH_TRUST))
            for entry in record.decisions
        ):
            return Refusal(
                RefusalCode.REUSED_DECISION_ID,
                f"decision {quoted(decision.decision_id)} was already received",
            )
        return None

    def _riskier(
        self, record: ApprovalRecord, item: Incoming, modification: Modification, now: datetime
    ) -> Generator[Need, Answer, tuple[Refusal | None, datetime]]:
        """A modification is a decision on the action it makes: one riskier than the
        proposed action is judged at its own risk (the reviewer's limit), and needs the
        approvers that risk needs. The record then shows the higher risk and quorum."""
        risk = max(record.risk, modification.risk or 0)
        quorum = max(record.quorum, modification.quorum or 1)
        if (risk, quorum) == (record.risk, record.quorum):
            return None, now
        if not self._patched(PATCH_MODIFIED_RISK):
            return None, now
        if risk > record.risk:
            answer = yield self._verify(item, risk, record)
            now, refusal = answer.now, _refusal_of(answer)
            if refusal is not None:
                code = refusal.code
                return Refusal(
                    RefusalCode.RISKIER if code is RefusalCode.NOT_ALLOWED else code,
                    f"the modified action scores risk {risk}: {refusal.sentence}",
                ), now
        record.risk, record.quorum = risk, quorum
        return None, now

    def settled(self, approval_id: str, now: datetime) -> None:
        """After the approval was decided: what is still queued on it is refused (in its
        turn), each answered with its refusal where the run records so."""
        record = self.records[approval_id]
        inbox = self.inbox[approval_id]
        answered = bool(inbox) and self._patched(PATCH_QUEUED_ANSWERED)
        while inbox:
            item = inbox.pop(0)
            if item.refused is None and self._twin(record, item):
                continue
            entry = item.refused or self._entry(item, decided_refusal(record))
            self._log(record, entry, item if answered else None)

    def _twin(self, record: ApprovalRecord, item: Incoming) -> bool:
        """The same decision a second time (the reviewer's library sends a `decide` update
        and, when no worker took it in time, the same decision as a durable signal): it
        is answered with the first one's entry and leaves nothing in the log."""
        decision = item.decision
        if not decision.decision_id:
            return False
        digest = payload_digest(item.fields)
        for entry in record.decisions:
            if (
                entry.decision_id == decision.decision_id
                and entry.kind is item.kind
                and entry.reviewer == decision.reviewer
                and entry.args == (decision.args if isinstance(decision, ModifyDecision) else None)
                # The same payload, signature and all: a copy sent unsigned or altered
                # first must not answer for the real decision.
                and entry.payload_digest == digest
                and self._patched(PATCH_TRUST)
            ):
                item.entry = entry
                return True
        return False

    def _vote_refusal(self, record: ApprovalRecord, decision: Any) -> Refusal | None:
        if record.quorum <= 1:
            if isinstance(decision, ApproveDecision) and decision.scope != "once" and record.votes:
                return Refusal(
                    RefusalCode.NOT_APPLICABLE,
                    "a standing approval can't be granted on an approval that needs a quorum",
                )
            return None
        if isinstance(decision, ApproveDecision):
            if decision.scope != "once":
                return Refusal(
                    RefusalCode.NOT_APPLICABLE,
                    f"approval {record.id} needs {record.quorum} approvers; a standing "
                    "approval can't stand in for them",
                )
            digest = current_digest(record)
            if any(
                v.reviewer == decision.reviewer and v.action_digest == digest for v in record.votes
            ):
                return Refusal(
                    RefusalCode.DUPLICATE_VOTE,
                    f"{quoted(decision.reviewer)} has already approved this action; it needs "
                    f"{record.quorum} different approvers",
                )
        return None

    def _vote(self, record: ApprovalRecord, item: Incoming) -> Vote:
        return Vote(
            reviewer=item.decision.reviewer,
            at=item.received_at,
            action_digest=current_digest(record),
            decision_id=item.decision.decision_id,
        )

    def _count(
        self, record: ApprovalRecord, item: Incoming, status: ApprovalStatus, now: datetime
    ) -> None:
        """A vote (or a modification) towards the quorum: decided once there are enough."""
        votes = len(record.votes)
        if record.quorum <= 1 or votes >= record.quorum:
            note = f"{votes} of {record.quorum} approvals" if record.quorum > 1 else None
            reviewers = ", ".join(v.reviewer for v in record.votes) if record.quorum > 1 else None
            self._apply(record, item, status, item.decision.comment or None, now, note, reviewers)
            return
        entry = self._entry(item, None, note=f"{votes} of {record.quorum} approvals")
        record.decisions.append(entry)
        item.entry = entry
        self.dirty = True
        self._logger.info("Approval %s: %d of %d approvals", record.id, votes, record.quorum)

    def _apply(
        self,
        record: ApprovalRecord,
        item: Incoming,
        status: ApprovalStatus,
        reason: str | None,
        now: datetime,
        note: str | None = None,
        reviewers: str | None = None,
    ) -> None:
        entry = self._entry(item, None, note=note)
        record.decisions.append(entry)
        item.entry = entry
        record.reviewer = reviewers or item.decision.reviewer
        record.reviewed_at = now
        record.reason = reason
        record.status = status
        self.dirty = True
        self._logger.info("Approval %s %s by %s", record.id, status.value, record.reviewer)

    # --- revoking standing approvals -------------------------------------------------------

    def next_revocation(self) -> Incoming | None:
        return self.revocations.pop(0) if self.revocations else None

    def revoke(self, item: Incoming, now: datetime) -> Judging:
        """Judge a revocation of a standing approval (the worker checks who may revoke)."""
        standing = self.standing[item.decision.approval_id]
        refusal: Refusal | None
        if standing.revoked_at is not None:
            refusal = Refusal(
                RefusalCode.ALREADY_DECIDED,
                f"standing approval {standing.id} was already revoked by "
                f"{quoted(standing.revoked_by or 'unknown')} at {standing.revoked_at.isoformat()}",
            )
        else:
            request = DecisionCheckRequest(
                decision=item.fields,
                tool=standing.tool,
                risk=standing.max_risk,
                requested_by="",
                received_at=item.received_at,
                kind=item.kind.value,
            )
            answer = yield Verify(request)
            now, refusal = answer.now, _refusal_of(answer)
        entry = DecisionEntry(
            decision_id=item.decision.decision_id,
            kind=DecisionKind.REVOKE,
            reviewer=item.decision.reviewer,
            reason=item.decision.reason,
            received_at=item.received_at,
            outcome="refused" if refusal else "applied",
            refusal=refusal.sentence if refusal else None,
            code=refusal.code if refusal else None,
            issuer=item.decision.issuer,
        )
        if refusal is None:
            standing.revoked_at, standing.revoked_by = now, item.decision.reviewer
            self.dirty = True
        record = self.records.get(standing.id)
        if record is not None:
            if refusal:
                self._log(record, entry, item)
            else:
                record.decisions.append(entry)
                item.entry = entry
        else:
            item.entry = entry
            if refusal:
                self.refuse_unattached("revoke", refusal, now)

    # --- the log -------------------------------------------------------------------------------

    def _entry(
        self, item: Incoming, refusal: Refusal | None, note: str | None = None
    ) -> DecisionEntry:
        decision = item.decision
        return DecisionEntry(
            decision_id=decision.decision_id,
            kind=item.kind,
            reviewer=decision.reviewer,
            reason=decision.reason if isinstance(decision, RejectDecision) else decision.comment,
            args=decision.args if isinstance(decision, ModifyDecision) else None,
            received_at=item.received_at,
            outcome="refused" if refusal else "applied",
            refusal=refusal.sentence if refusal else None,
            code=refusal.code if refusal else None,
            issuer=decision.issuer,
            scope=getattr(decision, "scope", None) if not refusal else None,
            note=note,
            payload_digest=payload_digest(item.fields),
        )

    def _log(
        self, record: ApprovalRecord, entry: DecisionEntry, item: Incoming | None = None
    ) -> None:
        """Keep a refused decision in the approval's log, bounded in count and size."""
        if item is not None:
            item.entry = entry
        refused = sum(1 for logged in record.decisions if logged.outcome == "refused")
        if refused >= MAX_REFUSED_PER_APPROVAL:
            record.refused_dropped += 1
        else:
            if entry.args is not None and len(json.dumps(entry.args)) > EXCERPT_CHARS:
                entry.excerpt = clip(json.dumps(entry.args, ensure_ascii=False), EXCERPT_CHARS)
                entry.args = None
            entry.reason = clip(entry.reason, EXCERPT_CHARS)
            record.decisions.append(entry)
        self.dirty = True
        self._logger.warning(
            "Refused decision on %s: %s", record.id, clip(entry.refusal or "", 300)
        )

    # --- state ---------------------------------------------------------------------------------

    def waiting(self) -> bool:
        """A decision or a revocation waits for its turn."""
        return bool(self.revocations) or any(self.inbox.values())

    def snapshot(self) -> GateState:
        """What a continued run needs: pending approvals intact, standing approvals,
        remembered rejections."""
        return GateState(
            pending=[r for r in self.records.values() if r.status is ApprovalStatus.PENDING],
            rejected=self.rejected,
            standing=list(self.standing.values()),
            approvals_total=self.approvals_total,
        )


def _refusal_of(answer: Answer) -> Refusal | None:
    return answer.refusal if isinstance(answer, Verified) else None
