"""What a decision is, and what became of it: the one vocabulary of the gate and of every
interface that sends it decisions.

- `Decision`: the union of approve, reject, modify and revoke (a vote toward a quorum is
  an approve or a modify on an approval that needs more than one). The update, the
  signals, the API bodies, the Redis bridge and the CLI all take this one model.
- `RefusalCode`: why a decision was refused, as a stable code beside the sentence a
  reviewer reads. Interfaces choose their answer (HTTP status, exit code, chat reply) from
  the code through `FORMS`, never by reading the sentence.
- `Receipt`: what the run answers to a decision: the log entry, and the approval as the
  run sees it once the decision was judged.

Pure: pydantic and the standard library only, safe inside the workflow sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field

from hitl.models import (
    ApprovalRecord,
    ApproveDecision,
    DecisionEntry,
    DecisionKind,
    ModifyDecision,
    RejectDecision,
    RevokeDecision,
)

AnyDecision = ApproveDecision | RejectDecision | ModifyDecision | RevokeDecision
Decision = Annotated[AnyDecision, Field(discriminator="kind")]
"""One decision as it arrives from any interface: `kind` says which."""

DECISION_MODELS: dict[DecisionKind, type[AnyDecision]] = {
    DecisionKind.APPROVE: ApproveDecision,
    DecisionKind.REJECT: RejectDecision,
    DecisionKind.MODIFY: ModifyDecision,
    DecisionKind.REVOKE: RevokeDecision,
}
"""The payload each signal takes; the signal's name decides the kind."""


class RefusalCode(StrEnum):
    """Why a decision was refused. Stable: interfaces and scripts branch on these; new
    codes are only added. Recorded on each refused `DecisionEntry` as `code`."""

    ALREADY_DECIDED = "already_decided"
    """The approval was decided before (by a person, or by policy)."""
    EXPIRED = "expired"
    """The approval timed out and was auto-rejected."""
    LATE = "late"
    """The decision arrived at or after the approval's deadline."""
    STALE_ACTION = "stale_action"
    """The decision names an action digest that is not the approval's action now."""
    NOT_ALLOWED = "not_allowed"
    """The reviewer may not decide this (not a reviewer, rules, risk cap, own run)."""
    UNAUTHENTICATED = "unauthenticated"
    """The decision's signature is missing, wrong, expired, or from an unknown issuer."""
    INVALID_ARGUMENTS = "invalid_arguments"
    """A modification's arguments are invalid for the tool."""
    NOT_MODIFIABLE = "not_modifiable"
    """The approval does not take modified arguments."""
    NOT_APPLICABLE = "not_applicable"
    """The decision can't apply to this approval as asked (e.g. a standing approval on an
    approval that needs a quorum, revoking what isn't standing)."""
    DUPLICATE_VOTE = "duplicate_vote"
    """The reviewer already voted on this approval."""
    RISKIER = "riskier"
    """A modification would make the action riskier than the reviewer may approve."""
    UNKNOWN_APPROVAL = "unknown_approval"
    """No approval with this id in the run."""
    MALFORMED = "malformed"
    """The payload could not be read as a decision (shape, size, encoding)."""
    REUSED_DECISION_ID = "reused_decision_id"
    """A decision id already used by a different decision."""
    UNVERIFIABLE = "unverifiable"
    """The worker could not check the decision now (configuration or a failing check); a
    new decision (a new decision id) sent later may apply. The same decision sent again is
    answered with this refusal: a decision is judged once."""
    RUN_ENDED = "run_ended"
    """The run had ended before the decision reached it (reviewer side)."""
    NOT_FOUND = "not_found"
    """No run holds an approval with this id (reviewer side)."""


@dataclass(frozen=True)
class Form:
    """How one refusal code is answered on each interface."""

    http: int
    """The review API's status."""
    exit: int
    """The CLI's exit code (0 is kept for applied, 2 for usage and connection errors)."""
    title: str
    """A few words for a list or a chat reply (the sentence says the rest)."""


FORMS: dict[RefusalCode, Form] = {
    RefusalCode.ALREADY_DECIDED: Form(409, 1, "already decided"),
    RefusalCode.EXPIRED: Form(409, 1, "expired"),
    RefusalCode.LATE: Form(409, 1, "too late"),
    RefusalCode.STALE_ACTION: Form(409, 1, "the action changed"),
    RefusalCode.NOT_ALLOWED: Form(403, 1, "not allowed"),
    RefusalCode.UNAUTHENTICATED: Form(403, 1, "not authenticated"),
    RefusalCode.INVALID_ARGUMENTS: Form(422, 1, "invalid arguments"),
    RefusalCode.NOT_MODIFIABLE: Form(422, 1, "can't be modified"),
    # 409, not 422: the decision is well formed; the approval's state refuses it.
    RefusalCode.NOT_APPLICABLE: Form(409, 1, "doesn't apply"),
    RefusalCode.DUPLICATE_VOTE: Form(409, 1, "already voted"),
    RefusalCode.RISKIER: Form(403, 1, "riskier than allowed"),
    RefusalCode.UNKNOWN_APPROVAL: Form(404, 1, "unknown approval"),
    RefusalCode.MALFORMED: Form(422, 1, "unreadable decision"),
    RefusalCode.REUSED_DECISION_ID: Form(409, 1, "decision id reused"),
    RefusalCode.UNVERIFIABLE: Form(503, 1, "could not be checked"),
    RefusalCode.RUN_ENDED: Form(409, 1, "run ended"),
    RefusalCode.NOT_FOUND: Form(404, 1, "not found"),
}
"""The one table every interface reads its answer to a refusal from."""

UNKNOWN_FORM = Form(409, 1, "refused")
"""For an entry recorded before codes existed, or a code newer than this reader."""


def form_of(code: str | None) -> Form:
    try:
        return FORMS[RefusalCode(code)] if code else UNKNOWN_FORM
    except ValueError:
        return UNKNOWN_FORM


class Receipt(BaseModel):
    """The run's answer to one decision."""

    entry: DecisionEntry
    """The decision as the run logged it: applied, or refused with `code` and `refusal`."""
    record: ApprovalRecord | None = None
    """The approval as the run sees it after judging the decision (None: the decision named
    no approval of this run, or a revoke of a standing approval)."""

    @property
    def applied(self) -> bool:
        return self.entry.outcome == "applied"

    @property
    def code(self) -> RefusalCode | None:
        if self.applied or not self.entry.code:
            return None
        try:
            return RefusalCode(self.entry.code)
        except ValueError:
            return None


def current_digest(record: ApprovalRecord) -> str:
    """The digest of the action a decision on this approval now decides: a reviewer's
    modification while a quorum is still counting, else the proposed action. A decision
    that names another digest is refused as `stale_action`."""
    return record.effective_action.digest() if record.modified_action_json else record.action_digest


PAST_TENSE: dict[DecisionKind, str] = {
    DecisionKind.APPROVE: "approved",
    DecisionKind.REJECT: "rejected",
    DecisionKind.MODIFY: "modified",
    DecisionKind.REVOKE: "revoked",
    DecisionKind.TIMEOUT: "timed out",
    DecisionKind.POLICY: "approved by policy",
    DecisionKind.STANDING: "approved by a standing approval",
}


VOTES = {DecisionKind.APPROVE: "approval", DecisionKind.MODIFY: "modification"}
"""The decisions that count toward a quorum, and what each is called."""


def waits_for_more(entry: DecisionEntry, record: ApprovalRecord | None = None) -> bool:
    """An applied vote (an approval, or a modification while a quorum counts) that does
    not complete its quorum yet ("1 of 2 approvals")."""
    if entry.outcome != "applied" or entry.kind not in VOTES or not entry.note:
        return False
    if record is not None:
        return record.status.value == "pending"
    # An entry without its record (a worker from before receipts): the run's note counts.
    votes, _, needed = entry.note.removesuffix(" approvals").partition(" of ")
    return votes.isdigit() and needed.isdigit() and int(votes) < int(needed)


def refused_words(code: str | None, sentence: str | None) -> str:
    """ "refused (too late): <sentence>"; an entry from before codes says only "refused"."""
    form = form_of(code)
    words = "refused" if form is UNKNOWN_FORM else f"refused ({form.title})"
    return f"{words}: {sentence}" if sentence else words


def describe_entry(entry: DecisionEntry, record: ApprovalRecord | None = None) -> str:
    """What became of one decision, in a few words every interface shows the same way:
    "approved by ann (2 of 2 approvals)", "refused (the action changed): <the run's
    sentence>". The words for a refusal come from its code (`form_of`), never from its
    sentence. Not escaped: names and sentences are the sender's and the run's, so each
    surface escapes the result for itself (`hitl.text.visible`)."""
    if entry.outcome != "applied":
        return refused_words(entry.code, entry.refusal)
    if entry.kind == DecisionKind.REVOKE:
        return f"standing approval revoked by {entry.reviewer}"
    if waits_for_more(entry, record):
        vote = VOTES[entry.kind]
        return f"{vote} by {entry.reviewer} recorded ({entry.note}); it waits for more approvers"
    words = f"{PAST_TENSE.get(entry.kind, entry.kind.value)} by {entry.reviewer}"
    return words + (f" ({entry.note})" if entry.note else "")
