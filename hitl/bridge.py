"""`hitl bridge redis`: decisions that come back through Redis.

Approvals are published on `HITL_REDIS_CHANNEL` (default `hitl:approvals`) with the
approval id as `correlation_id`. A reviewer's tool answers by publishing on
`HITL_REDIS_DECISIONS` (default `hitl:decisions`):

    {"correlation_id": "apr_…", "kind": "approve", "token": "<bearer token>",
     "comment": "…"}                     # reject: "reason"; modify: "args"

The bridge authenticates the token against the reviewers file (HITL_REVIEWERS), applies
the same rules as the review API, signs the decision for the worker, sends it through
the reviewer library, and answers on `hitl:replies:<correlation_id>` with what the run
said: `{"correlation_id", "outcome": "applied" | "refused", "refusal", "reviewer",
"entry"}`. A malformed or unauthorized message is refused there with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.client import Client

from hitl.models import ApproveDecision, ModifyDecision, RejectDecision
from hitl.policy import format_validation_error
from hitl.reviewers import ReviewerConfig, ReviewerConfigError, load_config, signer
from hitl.reviews import ReviewError, Reviews, check_id
from hitl.text import clip

log = structlog.get_logger("hitl.bridge")

DEFAULT_DECISIONS = "hitl:decisions"
REPLIES = "hitl:replies:"
MAX_MESSAGE_BYTES = 96 * 1024
DECISIONS: dict[str, type[ApproveDecision | RejectDecision | ModifyDecision]] = {
    "approve": ApproveDecision,
    "reject": RejectDecision,
    "modify": ModifyDecision,
}
TEXT_FIELDS = {"approve": "comment", "reject": "reason", "modify": "comment"}


class Refused(Exception):
    pass


class RedisBridge:
    def __init__(
        self,
        client: Client,
        redis_url: str,
        config: ReviewerConfig,
        decisions: str = DEFAULT_DECISIONS,
        insecure_no_auth: bool = False,
    ) -> None:
        if not config.reviewers and not insecure_no_auth:
            raise ReviewerConfigError(
                "no reviewers file: set HITL_REVIEWERS (`hitl reviewers add NAME`), or pass "
                "--insecure-no-auth to believe any reviewer name in a message"
            )
        self.client = client
        self.redis_url = redis_url
        self.config = config
        self.decisions = decisions
        self.insecure = insecure_no_auth
        self.reviews = Reviews(client)
        self.handled = 0

    def decision(self, message: dict[str, Any]) -> tuple[Any, str]:
        """The decision a message asks for, and who makes it; Refused with the reason."""
        kind = message.get("kind")
        if kind not in DECISIONS:
            raise Refused("kind must be approve, reject or modify")
        approval_id = message.get("correlation_id")
        if not isinstance(approval_id, str):
            raise Refused("correlation_id (the approval id) is missing")
        try:
            check_id(approval_id)
        except ReviewError as error:
            raise Refused(str(error)) from None
        reviewer = self._reviewer(message)
        fields: dict[str, Any] = {
            "approval_id": approval_id,
            "reviewer": reviewer,
            TEXT_FIELDS[kind]: message.get(TEXT_FIELDS[kind], "") or "",
        }
        if kind == "modify":
            fields["args"] = message.get("args")
        if "action_digest" in message:
            fields["action_digest"] = message["action_digest"]
        if kind == "reject" and not fields["reason"]:
            raise Refused("a rejection needs a reason (the agent reads it)")
        try:
            return DECISIONS[kind].model_validate(fields), reviewer
        except ValidationError as error:
            raise Refused(f"malformed {kind}: {format_validation_error(error)}") from None

    def _reviewer(self, message: dict[str, Any]) -> str:
        token = message.get("token")
        if self.config.reviewers:
            if not isinstance(token, str) or not token:
                raise Refused("unauthorized: the message carries no token")
            found = self.config.by_token(token)
            if found is None:
                raise Refused("unauthorized: the token is not a reviewer's")
            named = message.get("reviewer")
            if named is not None and named != found.name:
                raise Refused(
                    f"forbidden: the token is {found.name}'s; a message naming another "
                    "reviewer is refused"
                )
            return found.name
        named = message.get("reviewer")
        if not isinstance(named, str) or not named.strip():
            raise Refused("reviewer is missing (this bridge runs without authentication)")
        return named

    async def handle(self, raw: bytes | str) -> dict[str, Any]:
        """One message in, the reply out (also published on the reply channel)."""
        began = time.perf_counter()
        correlation: Any = None
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise Refused(f"the message is over {MAX_MESSAGE_BYTES:,} bytes")
            try:
                message = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise Refused(f"not JSON: {error}") from None
            if not isinstance(message, dict):
                raise Refused("a decision message is a JSON object")
            correlation = message.get("correlation_id")
            decision, reviewer = self.decision(message)
            record = await self.reviews.get(decision.approval_id)
            refusal = self.config.refusal(
                reviewer,
                decision.kind,
                record.action_json.tool,
                record.risk,
                record.context.requested_by,
            ) if self.config.reviewers else None  # fmt: skip
            if refusal:
                raise Refused(f"forbidden: {refusal}")
            outcome = await self.reviews.decide(decision, workflow_id=record.session_id)
            if outcome.rejected:
                raise Refused(outcome.rejected)
            if outcome.ended:
                raise Refused(f"the run has ended; approval {decision.approval_id} was decided")
            entry = outcome.entry
            reply: dict[str, Any] = {
                "correlation_id": decision.approval_id,
                "outcome": entry.outcome if entry else "sent",
                "refusal": entry.refusal if entry else None,
                "reviewer": reviewer,
                "entry": entry.model_dump(mode="json") if entry else None,
            }
        except Refused as error:
            reply = {"correlation_id": correlation, "outcome": "refused", "refusal": str(error)}
        except ReviewError as error:
            reply = {"correlation_id": correlation, "outcome": "refused", "refusal": str(error)}
        reply["seconds"] = round(time.perf_counter() - began, 4)
        self.handled += 1
        log.info(
            "bridge.decision",
            correlation_id=clip(str(correlation), 100),
            outcome=reply["outcome"],
            refusal=reply.get("refusal"),
        )
        return reply

    async def run(self, ready: asyncio.Event | None = None) -> None:
        import redis.asyncio as redis

        connection = redis.from_url(self.redis_url)
        pubsub = connection.pubsub()
        await pubsub.subscribe(self.decisions)
        if ready is not None:
            ready.set()
        log.info("bridge.listening", channel=self.decisions)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                reply = await self.handle(message["data"])
                channel = f"{REPLIES}{reply.get('correlation_id') or 'unknown'}"
                await connection.publish(channel, json.dumps(reply, ensure_ascii=True))
        finally:
            await pubsub.aclose()
            await connection.aclose()


async def run_bridge(client: Client, insecure_no_auth: bool = False) -> None:
    url = os.environ.get("HITL_REDIS_URL")
    if not url:
        raise ReviewerConfigError("set HITL_REDIS_URL (redis://host:port/0) for the bridge")
    bridge = RedisBridge(
        client,
        url,
        load_config(),
        decisions=os.environ.get("HITL_REDIS_DECISIONS") or DEFAULT_DECISIONS,
        insecure_no_auth=insecure_no_auth,
    )
    if signer() is None and not insecure_no_auth:
        log.warning(
            "bridge.unsigned",
            note="no HITL_SIGNING_KEY: decisions go unsigned; a worker that requires signed "
            "decisions will refuse them",
        )
    await bridge.run()
