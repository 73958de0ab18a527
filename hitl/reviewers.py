"""Who may decide what: reviewers, their tokens, what each may decide, and signed decisions.

The reviewers file (TOML, path in `HITL_REVIEWERS`) lists each reviewer with the SHA-256
of a bearer token (never the token), and what they may decide:

    [reviewers.alice]
    token_sha256 = "9f86d0…"       # `hitl reviewers add alice` writes this, prints the token once
    tools = ["*"]                  # tool names, or "*"
    max_risk = 100                 # highest risk they may approve
    groups = ["ops"]
    self_approve = []              # tools they may approve in runs they started themselves

    read = []                      # tools whose approvals they may read without deciding
    slack_user = "U012ABCDEF"      # their Slack member id: their clicks in Slack decide as them

    [[quorum]]                     # calls at or above this risk need this many approvers
    min_risk = 80
    approvals = 2

    [[escalation]]                 # first matching rule (by tool and/or risk) applies
    tool = "deploy"                # optional: a tool name or "*"
    min_risk = 50                  # optional
    remind_at = [0.5]              # fractions of the approval's time, or seconds (>= 1)
    escalate_after = 1200          # seconds; then `to` are asked too and may decide
    to = "oncall"                  # a group (reviewers' `groups`) or a list of names
    at_deadline = "reject"         # or "extend": held once for extend_by, then rejected
    extend_by = 600                # seconds, at most a day
    working_hours = true           # its times (and the approval's) count working time only

    [working_hours]                # when the clock runs for rules that ask for it
    timezone = "Europe/Berlin"
    days = ["mon", "tue", "wed", "thu", "fri"]
    hours = "09:00-17:00"
    holidays = ["2026-12-25"]

    [policy]                       # the worker's; a run's input may only make it stricter
    auto_approve_below = 0         # flagged calls below this risk are approved by policy
    standing = true                # whether reviewers may grant standing approvals
    approval_timeout = 1800        # seconds, for tools without their own

A reviewer's identity comes from their credential, never from a request body. And
because anyone with access to the Temporal namespace can send a signal with any
reviewer name, when decision keys are configured (`HITL_DECISION_KEYS` on the worker:
`issuer:key,...`) the worker accepts only decisions signed by a known issuer: the review
API signs for the reviewer it authenticated; a reviewer's own key (`HITL_SIGNER`,
`HITL_SIGNING_KEY`) signs for that reviewer only. The worker checks signatures and the
rules above in a local activity, so no key ever enters workflow history.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hitl.models import (
    MAX_ESCALATION_REVIEWERS,
    MAX_EXTEND_SECONDS,
    EscalationPolicy,
    canonical_json,
)

REVIEWERS_ENV = "HITL_REVIEWERS"
DECISION_KEYS_ENV = "HITL_DECISION_KEYS"
SIGNER_ENV = "HITL_SIGNER"
SIGNING_KEY_ENV = "HITL_SIGNING_KEY"
API_ISSUER = "api"
"""The review API's issuer name: it may sign for any reviewer it authenticated."""
RESERVED_NAMES = frozenset({API_ISSUER, "system", "policy", "anonymous", "unknown"})
"""Names the system uses for issuers and its own decisions: no reviewer may be called so,
or a reviewer's own key would sign as the API (for anyone)."""
SIGNATURE_LIFETIME = timedelta(minutes=15)
SIGNED_FIELDS = (
    "approval_id",
    "kind",
    "reviewer",
    "decision_id",
    "action_digest",
    "args",
    "scope",
    "max_risk",
    "issuer",
    "issued_at",
    "comment",
    "reason",
)
"""Everything a decision carries that the run acts on or a person or the agent reads."""


class ReviewerConfigError(ValueError):
    """The reviewers file can't be used; the message says what to fix."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Reviewer:
    name: str
    token_sha256: str
    tools: tuple[str, ...] = ("*",)
    max_risk: int = 100
    groups: tuple[str, ...] = ()
    self_approve: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    """Tools whose approvals this reviewer may read (list, record, events) without
    deciding them; those they may decide they may always read."""
    slack_user: str | None = None
    """Their Slack member id (`U…`): a click in Slack by that user decides as this
    reviewer, through the same rules (`hitl.api.routers.slack`)."""

    def may_decide(self, tool: str) -> bool:
        return "*" in self.tools or tool in self.tools

    def may_read(self, tool: str) -> bool:
        return self.may_decide(tool) or "*" in self.read or tool in self.read


@dataclass(frozen=True)
class Policy:
    """The worker's approval policy beyond each tool's own definition."""

    auto_approve_below: int = 0
    """Flagged calls whose risk is below this are approved by policy (0: none)."""
    standing: bool = True
    """Whether reviewers may grant standing approvals at all."""
    approval_timeout: float | None = None
    """Seconds an approval waits, for tools without their own (default 30 minutes)."""


@dataclass(frozen=True)
class QuorumRule:
    min_risk: int
    approvals: int


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_CALENDAR_DAYS = 400
"""How far ahead working time is looked for; beyond it, time counts as it passes."""


@dataclass(frozen=True)
class WorkingHours:
    """When the clock runs for approvals whose escalation rule says `working_hours`."""

    timezone: str
    days: frozenset[int]
    """Weekdays, 0 = Monday."""
    opens: time
    closes: time
    holidays: frozenset[date] = frozenset()

    def wall_seconds(self, start: datetime, working: float) -> float:
        """Seconds of calendar time from `start` until `working` seconds of working time
        have passed (deterministic: a function of its arguments and the time zone rules)."""
        zone = ZoneInfo(self.timezone)
        begin = start.astimezone(UTC)
        left = max(0.0, working)
        day = begin.astimezone(zone).date()
        for _ in range(MAX_CALENDAR_DAYS):
            if day.weekday() in self.days and day not in self.holidays:
                # Compared in UTC: aware times in one zone subtract as wall clocks (DST).
                opens = datetime.combine(day, self.opens, zone).astimezone(UTC)
                closes = datetime.combine(day, self.closes, zone).astimezone(UTC)
                since = max(opens, begin)
                if closes > since:
                    span = (closes - since).total_seconds()
                    if span >= left:
                        return (since + timedelta(seconds=left) - begin).total_seconds()
                    left -= span
            day += timedelta(days=1)
        return working  # no working time found: the clock runs as time passes

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        text = f"{self.timezone} {days} {self.opens:%H:%M}-{self.closes:%H:%M}"
        return text + (f", {len(self.holidays)} holiday(s)" if self.holidays else "")


@dataclass(frozen=True)
class EscalationRule:
    """One `[[escalation]]` table: which calls it covers and what it does."""

    index: int
    tool: str | None = None
    min_risk: int = 0
    remind_at: tuple[float, ...] = ()
    """Fractions (0 < f < 1) of the approval's time, or seconds (>= 1) after it opened."""
    escalate_after: float | None = None
    to: tuple[str, ...] = ()
    """Reviewer names or group names, as written (resolved when a call is checked)."""
    at_deadline: str = "reject"
    extend_by: float = 0.0
    working_hours: bool = False

    def covers(self, tool: str, risk: int) -> bool:
        return (self.tool in (None, "*", tool)) and risk >= self.min_risk


@dataclass
class ReviewerConfig:
    reviewers: dict[str, Reviewer] = field(default_factory=dict)
    quorum: list[QuorumRule] = field(default_factory=list)
    policy: Policy = field(default_factory=Policy)
    path: Path | None = None
    escalation: list[EscalationRule] = field(default_factory=list)
    working_hours: WorkingHours | None = None

    def members(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """Reviewer names for names or groups (reviewers' `groups`), in file order."""
        found: list[str] = []
        for name in names:
            if name in self.reviewers:
                matched = [name]
            else:
                matched = [r.name for r in self.reviewers.values() if name in r.groups]
            found.extend(member for member in matched if member not in found)
        return found

    def escalation_for(
        self, tool: str, risk: int, approval_timeout: float
    ) -> EscalationPolicy | None:
        """The first `[[escalation]]` rule covering this call, as the run applies it."""
        for rule in self.escalation:
            if not rule.covers(tool, risk):
                continue
            span = max(approval_timeout, 1e-9)
            fractions = sorted({f if f < 1 else f / span for f in rule.remind_at} - {0.0})
            return EscalationPolicy(
                remind_at=[f for f in fractions if 0 < f < 1],
                escalate_after_seconds=rule.escalate_after,
                to=self.members(rule.to)[:MAX_ESCALATION_REVIEWERS],
                at_deadline="extend" if rule.at_deadline == "extend" else "reject",
                extend_by_seconds=min(rule.extend_by, MAX_EXTEND_SECONDS),
                rule=f"escalation[{rule.index}]",
            )
        return None

    def by_token(self, token: str) -> Reviewer | None:
        """The reviewer whose token this is (compared in constant time), else None."""
        digest = token_hash(token)
        found = None
        for reviewer in self.reviewers.values():
            if hmac.compare_digest(reviewer.token_sha256, digest):
                found = reviewer
        return found

    def by_slack_user(self, user_id: str) -> Reviewer | None:
        """The reviewer whose Slack member id this is, else None."""
        if not user_id:
            return None
        return next((r for r in self.reviewers.values() if r.slack_user == user_id), None)

    def timed_escalation(
        self, tool: str, risk: int, approval_timeout: float, now: datetime
    ) -> tuple[EscalationPolicy | None, float]:
        """The escalation policy and the approval timeout, as calendar time from `now`:
        where the matching rule counts working hours only, its times (and the approval's
        timeout) are stretched over the `[working_hours]` from now on."""
        found = self.escalation_for(tool, risk, approval_timeout)
        rule = next((r for r in self.escalation if r.covers(tool, risk)), None)
        hours = self.working_hours
        if found is None or rule is None or not rule.working_hours or hours is None:
            return found, approval_timeout
        total = hours.wall_seconds(now, approval_timeout)
        reminders = {
            hours.wall_seconds(now, fraction * approval_timeout) / total
            for fraction in found.remind_at
        }
        after = found.escalate_after_seconds
        return (
            found.model_copy(
                update={
                    "remind_at": sorted(f for f in reminders if 0 < f < 1),
                    "escalate_after_seconds": (
                        hours.wall_seconds(now, after) if after is not None else None
                    ),
                    "working_hours": hours.describe(),
                }
            ),
            total,
        )

    def quorum_for(self, risk: int, own: int = 1) -> int:
        needed = own
        for rule in self.quorum:
            if risk >= rule.min_risk:
                needed = max(needed, rule.approvals)
        return needed

    def refusal(
        self,
        name: str,
        kind: str,
        tool: str,
        risk: int,
        requested_by: str,
        scope: str | None = None,
        max_risk: int | None = None,
        escalated_to: tuple[str, ...] | list[str] = (),
    ) -> str | None:
        """Why this reviewer may not make this decision, or None if they may.

        The one authorizer: the API, the inbox, the bridge, the CLI's signing path and the
        worker's verification all ask this, with the file as it is now. `escalated_to`:
        the reviewers the approval was escalated to by the time the decision arrived (the
        run's record, from the worker's policy): they may decide it whatever their tools,
        within their risk limit, and only once escalated.
        """
        reviewer = self.reviewers.get(name)
        if reviewer is None:
            return f"{name} is not a reviewer (not in the reviewers file)"
        if not reviewer.may_decide(tool) and name not in escalated_to:
            return f"{name} may not decide {tool} calls (their tools: {', '.join(reviewer.tools)})"
        if kind in ("approve", "modify") and risk > reviewer.max_risk:
            return f"{name} may approve up to risk {reviewer.max_risk}; this call's risk is {risk}"
        if (
            kind in ("approve", "modify")
            and requested_by
            and name == requested_by
            and tool not in reviewer.self_approve
        ):
            return (
                f"{name} started this run and may not approve its {tool} calls themselves; "
                "another reviewer decides"
            )
        if kind == "approve" and scope not in (None, "once"):
            standing = self.policy_refusal(kind, scope)
            if standing is not None:
                return standing
            if scope == "tool" and max_risk is not None and max_risk > reviewer.max_risk:
                return (
                    f"{name} may approve up to risk {reviewer.max_risk}, not a standing {max_risk}"
                )
        return None

    def policy_refusal(self, kind: str, scope: str | None) -> str | None:
        """What the worker's `[policy]` forbids whoever decides (a file may hold a policy
        and no reviewers)."""
        if kind == "approve" and scope not in (None, "once") and not self.policy.standing:
            return "standing approvals are turned off on this worker ([policy] standing)"
        return None

    def may_read(self, name: str, tool: str) -> bool:
        """Whether this reviewer may see approvals of this tool (list, record, events)."""
        reviewer = self.reviewers.get(name)
        return reviewer is not None and reviewer.may_read(tool)


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> ReviewerConfig:
    """The reviewers file from `path` or HITL_REVIEWERS; an empty config when neither is set."""
    environ = os.environ if environ is None else environ
    where = path or environ.get(REVIEWERS_ENV)
    if not where:
        return ReviewerConfig()
    file = Path(where)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ReviewerConfigError(
            f"the reviewers file {file} does not exist; create it with `hitl reviewers add NAME`"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ReviewerConfigError(f"the reviewers file {file} is not valid TOML: {error}") from None
    config = ReviewerConfig(path=file)
    try:
        for name, entry in (data.get("reviewers") or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("token_sha256"), str):
                raise ReviewerConfigError(
                    f"reviewer {name!r} in {file} needs token_sha256 (`hitl reviewers add {name}`)"
                )
            if name.strip().casefold() in RESERVED_NAMES:
                raise ReviewerConfigError(
                    f"reviewer {name!r} in {file}: {name!r} is a name the system uses "
                    f"({', '.join(sorted(RESERVED_NAMES))}); rename the reviewer"
                )
            config.reviewers[name] = Reviewer(
                name=name,
                token_sha256=entry["token_sha256"],
                tools=tuple(entry.get("tools", ["*"])),
                max_risk=int(entry.get("max_risk", 100)),
                groups=tuple(entry.get("groups", [])),
                self_approve=tuple(entry.get("self_approve", [])),
                read=tuple(entry.get("read", [])),
                slack_user=_slack_user(entry.get("slack_user"), name, file),
            )
        mapped: dict[str, str] = {}
        for reviewer in config.reviewers.values():
            if reviewer.slack_user is not None:
                if reviewer.slack_user in mapped:
                    raise ReviewerConfigError(
                        f"reviewers {mapped[reviewer.slack_user]!r} and {reviewer.name!r} in "
                        f"{file} have the same slack_user; one Slack user is one reviewer"
                    )
                mapped[reviewer.slack_user] = reviewer.name
        for rule in data.get("quorum") or []:
            config.quorum.append(QuorumRule(int(rule["min_risk"]), int(rule["approvals"])))
        policy = data.get("policy") or {}
        if not isinstance(policy, dict):
            raise ReviewerConfigError(f"[policy] in {file} is a table")
        config.policy = Policy(
            auto_approve_below=max(0, min(101, int(policy.get("auto_approve_below", 0)))),
            standing=bool(policy.get("standing", True)),
            approval_timeout=(
                float(policy["approval_timeout"]) if "approval_timeout" in policy else None
            ),
        )
        if config.policy.approval_timeout is not None and config.policy.approval_timeout <= 0:
            raise ReviewerConfigError(f"[policy] approval_timeout in {file} must be positive")
        config.working_hours = _working_hours(data.get("working_hours"), file)
        config.escalation = [
            _escalation_rule(index, rule, file, config)
            for index, rule in enumerate(data.get("escalation") or [])
        ]
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, ReviewerConfigError):
            raise
        raise ReviewerConfigError(
            f"the reviewers file {file} has a value of the wrong kind ({type(error).__name__}: "
            f"{error}); see `hitl reviewers --help`"
        ) from None
    return config


def _slack_user(value: object, name: str, file: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.isalnum() or not 2 <= len(value) <= 40:
        raise ReviewerConfigError(
            f"reviewer {name!r} in {file}: slack_user is a Slack member id such as "
            '"U012ABCDEF" (their profile, ⋮, Copy member ID)'
        )
    return value


def _escalation_rule(index: int, rule: Any, file: Path, config: ReviewerConfig) -> EscalationRule:
    where = f"[[escalation]] #{index + 1} in {file}"
    if not isinstance(rule, dict):
        raise ReviewerConfigError(f"{where} is a table")
    unknown = set(rule) - {
        "tool",
        "min_risk",
        "remind_at",
        "escalate_after",
        "to",
        "at_deadline",
        "extend_by",
        "working_hours",
    }
    if unknown:
        raise ReviewerConfigError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    to = rule.get("to", [])
    to = (to,) if isinstance(to, str) else tuple(str(name) for name in to)
    after = float(rule["escalate_after"]) if "escalate_after" in rule else None
    if after is not None and not (0 < after < 366 * 86400):
        raise ReviewerConfigError(f"{where}: escalate_after must be positive seconds")
    if (after is None) != (not to):
        raise ReviewerConfigError(f"{where}: escalate_after and to go together")
    if to and not config.members(to):
        raise ReviewerConfigError(
            f"{where}: to = {list(to)} names no reviewer (a reviewer's name, or a group in "
            "reviewers' `groups`)"
        )
    at_deadline = str(rule.get("at_deadline", "reject"))
    if at_deadline not in ("reject", "extend"):
        raise ReviewerConfigError(
            f'{where}: at_deadline is "reject" or "extend" (an approval never approves itself)'
        )
    extend_by = float(rule.get("extend_by", 0))
    if at_deadline == "extend" and not (0 < extend_by <= MAX_EXTEND_SECONDS):
        raise ReviewerConfigError(
            f"{where}: extend_by must be positive seconds, at most {MAX_EXTEND_SECONDS}"
        )
    remind_at = tuple(float(value) for value in rule.get("remind_at", []))
    if any(not (value > 0) or value != value for value in remind_at):
        raise ReviewerConfigError(f"{where}: remind_at holds fractions (0-1) or seconds (>= 1)")
    tool = rule.get("tool")
    working = rule.get("working_hours", False)
    if not isinstance(working, bool):
        raise ReviewerConfigError(f"{where}: working_hours is true or false")
    if working and config.working_hours is None:
        raise ReviewerConfigError(f"{where}: working_hours = true needs a [working_hours] table")
    return EscalationRule(
        working_hours=working,
        index=index,
        tool=str(tool) if tool is not None else None,
        min_risk=int(rule.get("min_risk", 0)),
        remind_at=remind_at,
        escalate_after=after,
        to=to,
        at_deadline=at_deadline,
        extend_by=extend_by if at_deadline == "extend" else 0.0,
    )


def _working_hours(table: Any, file: Path) -> WorkingHours | None:
    if table is None:
        return None
    where = f"[working_hours] in {file}"
    if not isinstance(table, dict):
        raise ReviewerConfigError(f"{where} is a table")
    zone = str(table.get("timezone", "UTC"))
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReviewerConfigError(f"{where}: unknown timezone {zone!r}") from None
    names = [str(day).strip().lower()[:3] for day in table.get("days", DAY_NAMES[:5])]
    if not names or any(name not in DAY_NAMES for name in names):
        raise ReviewerConfigError(f"{where}: days are some of {', '.join(DAY_NAMES)}")
    try:
        first, last = str(table.get("hours", "09:00-17:00")).split("-")
        opens, closes = time.fromisoformat(first.strip()), time.fromisoformat(last.strip())
    except ValueError:
        raise ReviewerConfigError(f'{where}: hours is "HH:MM-HH:MM"') from None
    if not opens < closes:
        raise ReviewerConfigError(f"{where}: hours must open before they close")
    holidays: set[date] = set()
    for day in table.get("holidays", []):
        try:
            holidays.add(day if isinstance(day, date) else date.fromisoformat(str(day)))
        except ValueError:
            raise ReviewerConfigError(f"{where}: holiday {day!r} is not YYYY-MM-DD") from None
    return WorkingHours(
        timezone=zone,
        days=frozenset(DAY_NAMES.index(name) for name in names),
        opens=opens,
        closes=closes,
        holidays=frozenset(holidays),
    )


def add_reviewer(
    path: Path,
    name: str,
    tools: list[str] | None = None,
    max_risk: int = 100,
    groups: list[str] | None = None,
) -> str:
    """Add (or replace) a reviewer in the file; returns their new token, shown only once."""
    from hitl.models import valid_reviewer_name  # the same rules as a decision's reviewer

    name = valid_reviewer_name(name)
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ReviewerConfigError("a reviewer name is letters, digits, '-', '_' or '.'")
    if name.casefold() in RESERVED_NAMES:
        raise ReviewerConfigError(
            f"{name!r} is a name the system uses ({', '.join(sorted(RESERVED_NAMES))}); "
            "choose another"
        )
    token = secrets.token_urlsafe(32)
    existing = path.read_text() if path.exists() else "# Reviewers: `hitl reviewers add NAME`\n"
    kept = _without_reviewer(existing, name)
    entry = (
        f"\n[reviewers.{name}]\n"
        f'token_sha256 = "{token_hash(token)}"\n'
        f"tools = {_toml_list(tools or ['*'])}\n"
        f"max_risk = {int(max_risk)}\n"
        f"groups = {_toml_list(groups or [])}\n"
        "self_approve = []\n"
    )
    path.write_text(kept.rstrip("\n") + "\n" + entry)
    path.chmod(0o600)
    load_config(path)  # what was written must load
    return token


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(canonical_json(item) for item in items) + "]"


def _without_reviewer(text: str, name: str) -> str:
    lines, out, skipping = text.splitlines(keepends=True), [], False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped == f"[reviewers.{name}]"
        if not skipping:
            out.append(line)
    return "".join(out)


# --- signed decisions ------------------------------------------------------------------------


def signed_payload(decision: Mapping[str, Any]) -> bytes:
    fields = {name: decision.get(name) for name in SIGNED_FIELDS}
    if isinstance(fields["issued_at"], datetime):
        fields["issued_at"] = fields["issued_at"].isoformat()
    return canonical_json(fields).encode()


def sign(
    decision: dict[str, Any], issuer: str, key: bytes, now: datetime | None = None
) -> dict[str, Any]:
    """The decision with `issuer`, `issued_at` and `signature` added."""
    signed = {**decision, "issuer": issuer, "issued_at": (now or datetime.now(UTC)).isoformat()}
    signed["signature"] = hmac.new(key, signed_payload(signed), hashlib.sha256).hexdigest()
    return signed


def decision_keys(environ: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """`HITL_DECISION_KEYS`: `issuer:base64key,...` (the keys the worker accepts)."""
    text = (os.environ if environ is None else environ).get(DECISION_KEYS_ENV, "")
    keys = {}
    for item in text.split(","):
        if not item.strip():
            continue
        issuer, _, encoded = item.strip().partition(":")
        if not issuer or not encoded:
            raise ReviewerConfigError(
                f"{DECISION_KEYS_ENV} holds issuer:base64key pairs separated by commas"
            )
        keys[issuer] = decode_key(encoded)
    return keys


def signer(environ: Mapping[str, str] | None = None) -> tuple[str, bytes] | None:
    """This process's own issuer name and key (`HITL_SIGNER`, `HITL_SIGNING_KEY`), if set."""
    environ = os.environ if environ is None else environ
    key = environ.get(SIGNING_KEY_ENV)
    if not key:
        return None
    return environ.get(SIGNER_ENV) or API_ISSUER, decode_key(key)


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def decode_key(encoded: str) -> bytes:
    """A decision key from its base64 text (`hitl reviewers key`); at least 16 bytes."""
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        raise ReviewerConfigError("a decision key is base64 (`hitl reviewers key`)") from None
    if len(key) < 16:
        raise ReviewerConfigError("a decision key needs at least 16 bytes (`hitl reviewers key`)")
    return key


def verify(
    decision: Mapping[str, Any],
    keys: Mapping[str, bytes],
    received_at: datetime,
) -> str | None:
    """Why a decision's signature is not acceptable, or None if it is."""
    issuer, signature = decision.get("issuer"), decision.get("signature")
    if not issuer or not signature:
        return (
            "decisions must be signed here: send them through the review API, or with "
            "`hitl` and your own key (HITL_SIGNER=NAME, HITL_SIGNING_KEY=KEY, with NAME:KEY "
            "in the worker's HITL_DECISION_KEYS); an unsigned signal is refused"
        )
    key = keys.get(str(issuer))
    if key is None:
        return f"{issuer} is not an issuer this worker accepts"
    expected = hmac.new(key, signed_payload(decision), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(signature)):
        return "the signature does not match the decision: it was forged or altered"
    if issuer != API_ISSUER and decision.get("reviewer") != issuer:
        return f"{issuer}'s key signs only {issuer}'s own decisions"
    if decision.get("action_digest") is None and decision.get("kind") != "revoke":
        return "a signed decision names the action it decides (action_digest)"
    issued = decision.get("issued_at")
    try:
        moment = datetime.fromisoformat(str(issued))
    except ValueError:
        return "the signature's time is not a timestamp"
    if moment.tzinfo is None:
        return "the signature's time has no time zone (sign with an aware UTC time)"
    if abs(received_at - moment) > SIGNATURE_LIFETIME:
        return f"the signature is from {moment.isoformat()}; signed decisions are valid for 15 min"
    return None


# --- signed starts ---------------------------------------------------------------------------

START_UNSIGNED = ("start_signature", "carry")
"""What a start signature does not cover: itself, and the carry only a run itself writes."""


def start_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run's input as a signature covers it: every field set to other than its default.

    Both sides dump the same model with `exclude_defaults`, so a field added later with a
    default doesn't change what an older starter signed.
    """
    return {name: value for name, value in run.items() if name not in START_UNSIGNED}


def start_payload(run: Mapping[str, Any], workflow_id: str, issuer: str, issued_at: str) -> bytes:
    return canonical_json(
        {
            "workflow_id": workflow_id,
            "run": start_fields(run),
            "issuer": issuer,
            "issued_at": issued_at,
        }
    ).encode()


def sign_start(
    run: Mapping[str, Any],
    workflow_id: str,
    issuer: str,
    key: bytes,
    now: datetime | None = None,
) -> dict[str, str]:
    """`{issuer, issued_at, signature}` over this run's input (`RunInput.model_dump(mode=
    "json", exclude_defaults=True)`, `requested_by` set) and its workflow id."""
    issued_at = (now or datetime.now(UTC)).isoformat()
    signature = hmac.new(
        key, start_payload(run, workflow_id, issuer, issued_at), hashlib.sha256
    ).hexdigest()
    return {"issuer": issuer, "issued_at": issued_at, "signature": signature}


def verify_start(
    run: Mapping[str, Any],
    workflow_id: str,
    keys: Mapping[str, bytes],
    started_at: datetime,
) -> tuple[bool, str | None]:
    """(verified, refusal): whether the start signature proves `requested_by`, and why not.

    No signature at all is (False, None): the caller decides whether an unverified
    requester may start a run here.
    """
    signed = run.get("start_signature")
    if not signed:
        return False, None
    if not isinstance(signed, Mapping):
        return False, "the start signature is not an object with issuer, issued_at, signature"
    issuer, issued_at, signature = (
        str(signed.get("issuer") or ""),
        signed.get("issued_at"),
        str(signed.get("signature") or ""),
    )
    key = keys.get(issuer)
    if key is None:
        return False, f"the run was signed by {issuer!r}, not an issuer this worker accepts"
    when = issued_at.isoformat() if isinstance(issued_at, datetime) else str(issued_at)
    expected = hmac.new(key, start_payload(run, workflow_id, issuer, when), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), signature):
        return False, (
            "the start signature does not match this run's input and id: it was made for "
            "another run, or the input was altered (or starter and worker versions differ)"
        )
    requested_by = str(run.get("requested_by") or "")
    if issuer != API_ISSUER and requested_by != issuer:
        return False, f"{issuer}'s key signs only runs {issuer} starts, not {requested_by!r}'s"
    if not requested_by:
        return False, "a signed start names who asked (requested_by)"
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        return False, "the start signature's time is not a timestamp"
    if moment.tzinfo is None or abs(started_at - moment) > SIGNATURE_LIFETIME:
        return False, (
            f"the start was signed at {when}, more than 15 min from when the run started "
            f"({started_at.isoformat()}); sign it again"
        )
    return True, None
