"""Checking a decision on the worker: its signature and the reviewers' rules.

A local activity, so the keys (`HITL_DECISION_KEYS`) and the reviewers file
(`HITL_REVIEWERS`) never enter workflow history, and the answer is recorded, so a
replay decides the same. With neither configured every decision is accepted, as
before; `hitl doctor` says that decisions are then unauthenticated.
"""

from __future__ import annotations

import structlog
from temporalio import activity

from hitl import contract
from hitl.models import DecisionCheck, DecisionCheckRequest
from hitl.reviewers import ReviewerConfigError, decision_keys, load_config, verify

log = structlog.get_logger("hitl.authz")


@activity.defn(name=contract.ACTIVITY_VERIFY_DECISION)
async def verify_decision(request: DecisionCheckRequest) -> DecisionCheck:
    """Refuse a decision that isn't signed by a known issuer, or that its reviewer may not make."""
    try:
        keys = decision_keys()
        config = load_config()
    except ReviewerConfigError as error:
        # Fail closed: a worker that can't read its rules accepts no decision.
        return DecisionCheck(refusal=f"the worker's reviewer configuration is unusable: {error}")
    decision = request.decision
    refusal = verify(decision, keys, request.received_at) if keys else None
    reviewer = str(decision.get("reviewer", "")).strip()
    if refusal is None and config.reviewers:
        refusal = config.refusal(
            reviewer, str(decision.get("kind")), request.tool, request.risk, request.requested_by
        )
    if refusal is None and config.reviewers and decision.get("scope") == "tool":
        allowed = config.reviewers[reviewer].max_risk
        wanted = decision.get("max_risk")
        if isinstance(wanted, int) and wanted > allowed:
            refusal = f"{reviewer} may approve up to risk {allowed}, not a standing {wanted}"
    log.info(
        "decision.checked",
        approval_id=decision.get("approval_id"),
        reviewer=reviewer,
        issuer=decision.get("issuer"),
        refused=refusal,
    )
    return DecisionCheck(refusal=refusal)
