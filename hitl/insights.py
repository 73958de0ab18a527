"""Figures about approvals, from their records: who decides what how fast, and which
approvals are not worth a person. Pure (models only, no temporalio, no I/O).

`hitl stats`, the API's `GET /insights` and the inbox's Insights page all show the
`Insights` this module computes from `Reviews.records`, in the one classification of
`ApprovalRecord.outcome` (pending, approved, modified, rejected, expired, auto).

- **Rates** per tool and overall are over settled approvals (every outcome but pending);
  per reviewer over the decisions each person made (approve, modify, reject: a vote
  towards a quorum counts for its voter).
- **Time to decide** is from the request to the person's decision (approved, modified and
  rejected approvals; per reviewer, to their own decision): p50 and p90 by nearest rank.
- **Load** counts requests per hour (ranges up to two days) or per day.
- **Shadow agreement**: an approval with a shadow verdict that a person settled is
  compared: `approve` agrees with approved, `deny` with rejected or expired; an `ask`
  verdict (or a rule that failed) asks a person, so it is counted apart. Disagreements are
  listed, those where the rule would have approved what a person did not first.
- **Candidates**: a tool, an exact action (same action digest) or a tool's scope (same
  scope key, e.g. the same program with the same options) that people approved unchanged
  at least `min_rate` of the time over at least `min_decisions` settled approvals:
  a candidate for an auto-approval rule or a standing approval.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from hitl.models import (
    RESERVED_REVIEWER_PREFIXES,
    ApprovalRecord,
    DecisionKind,
    canonical_json,
)
from hitl.text import clip

Outcome = Literal["pending", "approved", "modified", "rejected", "expired", "auto"]
OUTCOMES: tuple[Outcome, ...] = ("pending", "approved", "modified", "rejected", "expired", "auto")
PERSON_OUTCOMES = ("approved", "modified", "rejected")
"""Outcomes a person (or a quorum of people) chose: these have a time to decide."""
MIN_DECISIONS = 20
MIN_RATE = 0.95
MAX_LISTED = 100
"""Candidates, disagreements and problems listed at most; the counts say how many more."""
HOURLY_UP_TO = timedelta(days=2)
MAX_BUCKETS = 4000
EXAMPLE_CHARS = 300

_DECISION_OUTCOME = {
    DecisionKind.APPROVE: "approved",
    DecisionKind.MODIFY: "modified",
    DecisionKind.REJECT: "rejected",
}


class Rates(BaseModel):
    """Outcome counts and rates of one group (a tool, a reviewer, everything)."""

    name: str = ""
    requests: int = 0
    """Approvals (per reviewer: decisions they made)."""
    pending: int = 0
    approved: int = 0
    modified: int = 0
    rejected: int = 0
    expired: int = 0
    auto: int = 0
    approve_rate: float | None = None
    """Of the settled (every outcome but pending); None when none is settled."""
    modify_rate: float | None = None
    reject_rate: float | None = None
    expiry_rate: float | None = None
    auto_rate: float | None = None
    decide_p50_seconds: float | None = None
    """Time from request to a person's decision, median; None without one."""
    decide_p90_seconds: float | None = None

    @property
    def settled(self) -> int:
        return self.requests - self.pending


class LoadBucket(BaseModel):
    start: datetime
    requests: int = 0


class Disagreement(BaseModel):
    """A shadow rule's verdict that differed from what the person did."""

    approval_id: str
    workflow_id: str
    tool: str
    rule: str
    policy_digest: str = ""
    verdict: Literal["approve", "deny"]
    outcome: Outcome
    reviewer: str | None = None
    reason: str | None = None
    created_at: datetime
    risky: bool
    """The rule would have approved what a person rejected, modified or let expire."""


class RuleAgreement(BaseModel):
    rule: str
    policy_digest: str = ""
    compared: int = 0
    agreed: int = 0
    asked: int = 0


class ShadowAgreement(BaseModel):
    """How often shadow rules said what the people did."""

    compared: int = 0
    """Settled by a person, with a shadow verdict of approve or deny."""
    agreed: int = 0
    rate: float | None = None
    asked: int = 0
    """Shadow verdicts that passed the call to a person (`ask`, or a rule that failed)."""
    failed: int = 0
    """Of `asked`: the rule raised an error."""
    approved_not_approved: int = 0
    """The rule approved what a person rejected, modified or let expire."""
    denied_approved: int = 0
    """The rule denied what a person approved."""
    rules: list[RuleAgreement] = Field(default_factory=list)
    disagreements: list[Disagreement] = Field(default_factory=list)
    """Risky ones first, then newest first; at most `MAX_LISTED`."""


class Candidate(BaseModel):
    """Approvals people approve unchanged nearly every time."""

    kind: Literal["tool", "scope", "action"]
    """`tool`: every call of it; `scope`: its calls with one scope key; `action`: one exact
    action (the same tool and arguments)."""
    tool: str
    scope_key: str | None = None
    action_digest: str | None = None
    example: str = ""
    """The arguments of one of them, as JSON, cut short (what the model wrote: untrusted)."""
    settled: int
    """Settled by a person (approved, modified, rejected, expired)."""
    approved: int
    """Approved unchanged."""
    rate: float
    max_risk: int = 0
    suggestion: str


class Insights(BaseModel):
    """Every figure `hitl stats` and the Insights page show, over one time range."""

    since: datetime
    until: datetime | None = None
    generated_at: datetime
    approvals: int = 0
    withheld: int = 0
    """Approvals in the range of tools the reader may not read: left out of every figure."""
    overall: Rates = Field(default_factory=Rates)
    tools: list[Rates] = Field(default_factory=list)
    """Most requested first."""
    reviewers: list[Rates] = Field(default_factory=list)
    bucket: Literal["hour", "day"] = "day"
    load: list[LoadBucket] = Field(default_factory=list)
    shadow: ShadowAgreement = Field(default_factory=ShadowAgreement)
    candidates: list[Candidate] = Field(default_factory=list)
    candidates_not_shown: int = 0
    min_decisions: int = MIN_DECISIONS
    min_rate: float = MIN_RATE
    complete: bool = True
    """False: some runs could not be read (`problems`); the figures leave them out."""
    problems: list[str] = Field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `fraction` of the
    values at or below it (p50 of 1, 2, 3, 4 is 2); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class _Group:
    counts: Counter[str] = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)

    def rates(self, name: str) -> Rates:
        requests = sum(self.counts.values())
        settled = requests - self.counts["pending"]

        def rate(outcome: str) -> float | None:
            return self.counts[outcome] / settled if settled else None

        return Rates(
            name=name,
            requests=requests,
            pending=self.counts["pending"],
            approved=self.counts["approved"],
            modified=self.counts["modified"],
            rejected=self.counts["rejected"],
            expired=self.counts["expired"],
            auto=self.counts["auto"],
            approve_rate=rate("approved"),
            modify_rate=rate("modified"),
            reject_rate=rate("rejected"),
            expiry_rate=rate("expired"),
            auto_rate=rate("auto"),
            decide_p50_seconds=percentile(self.waits, 0.5),
            decide_p90_seconds=percentile(self.waits, 0.9),
        )


@dataclass
class _Tally:
    settled: int = 0
    approved: int = 0
    max_risk: int = 0
    example: str = ""


def _person(name: str) -> bool:
    folded = name.strip().lower()
    return bool(folded) and not any(folded.startswith(p) for p in RESERVED_REVIEWER_PREFIXES)


def _wait(record: ApprovalRecord, at: datetime | None) -> float | None:
    if at is None:
        return None
    return max(0.0, (at - record.created_at).total_seconds())


class InsightsBuilder:
    """Takes records one at a time (as `Reviews.records` yields them), then `build()`s."""

    def __init__(
        self,
        since: datetime,
        until: datetime | None = None,
        *,
        now: datetime | None = None,
        min_decisions: int = MIN_DECISIONS,
        min_rate: float = MIN_RATE,
    ) -> None:
        if min_decisions < 1 or not 0 < min_rate <= 1:
            raise ValueError("a candidate needs at least 1 decision and a rate in (0, 1]")
        self.since = since.astimezone(UTC)
        self.until = until.astimezone(UTC) if until is not None else None
        self.now = (now or datetime.now(UTC)).astimezone(UTC)
        self.min_decisions = min_decisions
        self.min_rate = min_rate
        self.approvals = 0
        self.withheld = 0
        self.problems: list[str] = []
        self._overall = _Group()
        self._tools: dict[str, _Group] = defaultdict(_Group)
        self._reviewers: dict[str, _Group] = defaultdict(_Group)
        self._created: list[datetime] = []
        self._shadow = ShadowAgreement()
        self._rules: dict[tuple[str, str], RuleAgreement] = {}
        self._disagreements: list[Disagreement] = []
        self._candidates: dict[tuple[str, str, str], _Tally] = defaultdict(_Tally)

    def add(self, record: ApprovalRecord) -> None:
        self.approvals += 1
        outcome = record.outcome
        tool = record.action_json.tool
        wait = _wait(record, record.reviewed_at) if outcome in PERSON_OUTCOMES else None
        for group in (self._overall, self._tools[tool]):
            group.counts[outcome] += 1
            if wait is not None:
                group.waits.append(wait)
        self._created.append(record.created_at.astimezone(UTC))
        for entry in record.decisions:
            said = _DECISION_OUTCOME.get(entry.kind)
            if said is None or entry.outcome != "applied" or not _person(entry.reviewer):
                continue
            person = self._reviewers[entry.reviewer]
            person.counts[said] += 1
            waited = _wait(record, entry.received_at)
            if waited is not None:
                person.waits.append(waited)
        self._add_shadow(record, outcome)
        if outcome in (*PERSON_OUTCOMES, "expired"):
            self._add_candidate(record, outcome)

    def _add_shadow(self, record: ApprovalRecord, outcome: Outcome) -> None:
        shadow = record.shadow
        if shadow is None or outcome in ("pending", "auto"):
            return
        key = (shadow.rule, shadow.policy_digest)
        rule = self._rules.setdefault(
            key, RuleAgreement(rule=shadow.rule, policy_digest=shadow.policy_digest)
        )
        if shadow.verdict == "ask" or shadow.error is not None:
            self._shadow.asked += 1
            self._shadow.failed += shadow.error is not None
            rule.asked += 1
            return
        agreed = (
            outcome == "approved"
            if shadow.verdict == "approve"
            else outcome in ("rejected", "expired")
        )
        self._shadow.compared += 1
        rule.compared += 1
        if agreed:
            self._shadow.agreed += 1
            rule.agreed += 1
            return
        risky = shadow.verdict == "approve"
        if risky:
            self._shadow.approved_not_approved += 1
        else:
            self._shadow.denied_approved += 1
        self._disagreements.append(
            Disagreement(
                approval_id=record.id,
                workflow_id=record.session_id,
                tool=record.action_json.tool,
                rule=shadow.rule,
                policy_digest=shadow.policy_digest,
                verdict=shadow.verdict,
                outcome=outcome,
                reviewer=record.reviewer if record.reviewer and _person(record.reviewer) else None,
                reason=clip(record.reason, 500) if record.reason else None,
                created_at=record.created_at,
                risky=risky,
            )
        )

    def _add_candidate(self, record: ApprovalRecord, outcome: Outcome) -> None:
        tool = record.action_json.tool
        keys = [("tool", tool, ""), ("action", tool, record.action_digest)]
        if record.scope_key:
            keys.append(("scope", tool, record.scope_key))
        for key in keys:
            tally = self._candidates[key]
            tally.settled += 1
            tally.approved += outcome == "approved"
            tally.max_risk = max(tally.max_risk, record.risk)
            if not tally.example and key[0] != "tool":
                tally.example = clip(canonical_json(record.action_json.args), EXAMPLE_CHARS)

    def _load(self) -> tuple[Literal["hour", "day"], list[LoadBucket]]:
        end = self.until or self.now
        hourly = end - self.since <= HOURLY_UP_TO
        size = timedelta(hours=1) if hourly else timedelta(days=1)
        start = self.since.replace(minute=0, second=0, microsecond=0)
        if not hourly:
            start = start.replace(hour=0)
        count = min(MAX_BUCKETS, max(1, math.ceil((end - start) / size)))
        buckets = [LoadBucket(start=start + i * size) for i in range(count)]
        for created in self._created:
            index = int((created - start) / size)
            if 0 <= index < count:
                buckets[index].requests += 1
        return ("hour" if hourly else "day"), buckets

    def _candidate_list(self) -> list[Candidate]:
        found = []
        for (kind, tool, key), tally in self._candidates.items():
            if tally.settled < self.min_decisions:
                continue
            rate = tally.approved / tally.settled
            if rate < self.min_rate:
                continue
            suggestion = {
                "tool": f"an auto-approval rule for {tool} up to risk {tally.max_risk}",
                "scope": "a standing approval of the tool for this scope, or a rule matching it",
                "action": "a standing approval of this exact action, or a rule matching it",
            }[kind]
            found.append(
                Candidate(
                    kind=kind,
                    tool=tool,
                    scope_key=key if kind == "scope" else None,
                    action_digest=key if kind == "action" else None,
                    example=tally.example,
                    settled=tally.settled,
                    approved=tally.approved,
                    rate=rate,
                    max_risk=tally.max_risk,
                    suggestion=suggestion,
                )
            )
        order = {"tool": 0, "scope": 1, "action": 2}
        found.sort(key=lambda c: (-c.settled, order[c.kind], c.tool))
        return found

    def build(self) -> Insights:
        bucket, load = self._load()
        shadow = self._shadow.model_copy()
        shadow.rate = shadow.agreed / shadow.compared if shadow.compared else None
        shadow.rules = sorted(self._rules.values(), key=lambda r: (-r.compared, r.rule))
        shadow.disagreements = sorted(
            self._disagreements, key=lambda d: (not d.risky, -d.created_at.timestamp())
        )[:MAX_LISTED]
        candidates = self._candidate_list()
        tools = [group.rates(name) for name, group in self._tools.items()]
        tools.sort(key=lambda r: (-r.requests, r.name))
        reviewers = [group.rates(name) for name, group in self._reviewers.items()]
        reviewers.sort(key=lambda r: (-r.requests, r.name))
        return Insights(
            since=self.since,
            until=self.until,
            generated_at=self.now,
            approvals=self.approvals,
            withheld=self.withheld,
            overall=self._overall.rates("all"),
            tools=tools,
            reviewers=reviewers,
            bucket=bucket,
            load=load,
            shadow=shadow,
            candidates=candidates[:MAX_LISTED],
            candidates_not_shown=max(0, len(candidates) - MAX_LISTED),
            min_decisions=self.min_decisions,
            min_rate=self.min_rate,
            complete=not self.problems,
            problems=[clip(p, 1000) for p in self.problems[:MAX_LISTED]],
        )


def insights(
    records: Iterable[ApprovalRecord],
    since: datetime,
    until: datetime | None = None,
    **options: object,
) -> Insights:
    """The figures over `records` (all of [since, until)) in one call."""
    builder = InsightsBuilder(since, until, **options)  # type: ignore[arg-type]
    for record in records:
        builder.add(record)
    return builder.build()
