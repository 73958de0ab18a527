"""Checking identities on the worker: a decision's signature and reviewer rules, a run's
requester.

Local activities, so the keys (`HITL_DECISION_KEYS`) and the reviewers file
(`HITL_REVIEWERS`) never enter workflow history, and the answers are recorded, so a
replay decides the same. With neither configured every decision is accepted and a
run's requester is what its starter claimed; `hitl doctor` says that decisions are then
unauthenticated.
"""

from __future__ import annotations

import structlog
from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from hitl import contract
from hitl.decisions import RefusalCode
from hitl.models import (
    DecisionCheck,
    DecisionCheckRequest,
    StartCheck,
    StartCheckRequest,
)
from hitl.reviewers import ReviewerConfigError, decision_keys, load_config, verify, verify_start
from hitl.text import clip

log = structlog.get_logger("hitl.authz")


@activity.defn(name=contract.ACTIVITY_VERIFY_DECISION)
async def verify_decision(request: DecisionCheckRequest) -> DecisionCheck:
    """Refuse a decision that isn't signed by a known issuer, or that its reviewer may not make."""
    try:
        keys = decision_keys()
        config = load_config()
    except ReviewerConfigError as error:
        # Fail closed: a worker that can't read its rules accepts no decision.
        return DecisionCheck(
            refusal=f"the worker's reviewer configuration is unusable: {error}",
            code=RefusalCode.UNVERIFIABLE,
        )
    decision = request.decision
    refusal = verify(decision, keys, request.received_at) if keys else None
    # Who signed is checked first: a refusal there says nothing about the reviewer's rules.
    code = RefusalCode.UNAUTHENTICATED if refusal is not None else RefusalCode.NOT_ALLOWED
    reviewer = str(decision.get("reviewer", "")).strip()
    # As the run read it: a signal's payload may leave `kind` out (its name says it), and
    # the rules (risk limits, no approving one's own run) depend on it.
    kind = request.kind or str(decision.get("kind"))
    if refusal is None and config.reviewers:
        # As the gate reads it (pydantic coerces "100" and 100.0 to 100), not as it came.
        wanted = _as_risk(decision.get("max_risk"))
        refusal = config.refusal(
            reviewer,
            kind,
            request.tool,
            request.risk,
            request.requested_by,
            scope=str(decision.get("scope") or "once"),
            max_risk=wanted,
            escalated_to=request.escalated_to,
        )
    if refusal is None:
        # The worker's policy holds with or without a list of reviewers.
        refusal = config.policy_refusal(kind, str(decision.get("scope") or "once"))
    log.info(
        "decision.checked",
        approval_id=decision.get("approval_id"),
        reviewer=reviewer,
        issuer=decision.get("issuer"),
        refused=refusal,
    )
    return DecisionCheck(refusal=refusal, code=code if refusal is not None else None)


def _as_risk(value: object) -> int | None:
    try:
        return TypeAdapter(int | None).validate_python(value)
    except ValidationError:
        return 101  # what the gate refuses anyway; above every reviewer's limit here


@activity.defn(name=contract.ACTIVITY_VERIFY_START)
async def verify_start_activity(request: StartCheckRequest) -> StartCheck:
    """Who started this run, proven by its start signature; refused where it must be proven.

    A worker that takes only signed decisions (`HITL_DECISION_KEYS` set) enforces
    separation of duties, so it refuses a run whose requester it can't verify: a name
    in an input is never identity.
    """
    claimed = clip(str(request.run.get("requested_by") or ""), 100)
    if request.continued_from is not None:
        return StartCheck(requested_by=claimed, refusal=await _continuation_refusal(request))
    try:
        keys = decision_keys()
    except ReviewerConfigError as error:
        return StartCheck(
            requested_by=claimed,
            refusal=f"the worker's key configuration is unusable: {error}",
        )
    verified, refusal = verify_start(request.run, request.workflow_id, keys, request.started_at)
    if refusal is None and not verified and keys:
        refusal = (
            "this worker takes only signed starts: start the run with starter.py and your "
            "own key (HITL_SIGNER=NAME, HITL_SIGNING_KEY=KEY, with NAME:KEY in the "
            "worker's HITL_DECISION_KEYS), or through the review API (POST /runs), so who "
            "asked is proven"
        )
    log.info(
        "start.checked",
        workflow_id=request.workflow_id,
        requested_by=claimed,
        verified=verified,
        refused=refusal,
    )
    return StartCheck(requested_by=claimed, verified=verified and refusal is None, refusal=refusal)


async def _continuation_refusal(request: StartCheckRequest) -> str | None:
    """Why the run this one continued from could not have written its carry, or None.

    A workflow may continue as new as any type on any task queue, so a workflow someone
    serves on a queue of their own can become this agent with a carry it wrote (approved
    records, a verified requester). The run before must be this workflow type, on this
    task queue (so this deployment's code wrote the carry), and have continued as new.
    """
    handle = activity.client().get_workflow_handle(
        request.workflow_id, run_id=request.continued_from
    )
    try:
        before = await handle.describe()
    except RPCError as error:
        if error.status is RPCStatusCode.NOT_FOUND:
            return f"the run it continued from ({request.continued_from}) is not known"
        raise  # the server is unreachable: Temporal's retry policy asks again
    if (
        before.workflow_type != request.workflow_type
        or before.task_queue != request.task_queue
        or before.status is not WorkflowExecutionStatus.CONTINUED_AS_NEW
    ):
        status = before.status.name if before.status else "unknown"
        return (
            f"the run it continued from was {before.workflow_type} on task queue "
            f"{before.task_queue!r} ({status}), not this workflow on {request.task_queue!r}; "
            "only this deployment's own run writes a carry"
        )
    return None
