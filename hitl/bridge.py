"""`hitl bridge redis`: decisions that come back through Redis, signed by their reviewer.

Approvals are published on `HITL_REDIS_CHANNEL` (default `hitl:approvals`) with the
approval id as `correlation_id` and the action's `action_digest`. A reviewer's tool
answers by publishing on `HITL_REDIS_DECISIONS` (default `hitl:decisions`) a decision
signed with the reviewer's OWN key (`HITL_SIGNER=alice`, `HITL_SIGNING_KEY`), the scheme
the worker verifies (`hitl.reviewers.sign`); `signed_message` makes one, and
`hitl bridge send` publishes it:

    {"correlation_id": "apr_…", "approval_id": "apr_…", "kind": "approve",
     "reviewer": "alice", "decision_id": "dec_…", "action_digest": "…", "comment": "ok",
     "issuer": "alice", "issued_at": "2026-…+00:00", "signature": "<hex HMAC-SHA256>"}

Everything on a pub/sub channel is seen by every subscriber, so nothing reusable may
travel there: a message carrying a bearer `token` is refused (and the token should be
replaced), and what does travel is bound to one approval, one action, one decision id
and 15 minutes. The bridge checks, before anything is sent: the signature against
`HITL_DECISION_KEYS` (the reviewer's own key; `api` is refused here), `action_digest`
and `decision_id` present, the signature not seen before (a replay), and the reviewer
rules of the reviewers file as it is now (read again for every message, so a removed
reviewer stops deciding at once; a replaced key is taken once the bridge restarts with
the new `HITL_DECISION_KEYS`, which it reads at start). It then forwards the decision
exactly as signed, and the worker checks the same signature again.

A reply says `outcome` (applied, refused, or sent when the run did not confirm in time);
a refused one carries `code`, a `hitl.decisions.RefusalCode` (the run's own, or the
bridge's: `unauthenticated`, `malformed`, `not_allowed`, ...) for a script to branch on,
`title`, a few words worded from that code (`hitl.decisions.FORMS`), and `refusal`, the
sentence a person reads.

Replies go to `hitl:replies:<correlation_id>` when the correlation id (else the
decision's `approval_id`) is a well-formed approval id; to `hitl:replies:invalid` when it
is something else (a pattern, a path, too long, not a string), and to
`hitl:replies:unknown` when the message names none (not JSON, not an object, no id). A
message over `MAX_MESSAGE_BYTES` is not parsed; its correlation id is looked for in its
first `SCAN_BYTES` and, when found, the refusal goes to its own channel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio.client import Client

from hitl.decisions import DECISION_MODELS, AnyDecision, RefusalCode, form_of
from hitl.models import DecisionKind
from hitl.policy import format_validation_error
from hitl.reviewers import (
    API_ISSUER,
    REVIEWERS_ENV,
    SIGNATURE_LIFETIME,
    SIGNER_ENV,
    SIGNING_KEY_ENV,
    ReviewerConfigError,
    decision_keys,
    load_config,
    sign,
    signer,
    verify,
)
from hitl.reviews import (
    ReviewError,
    Reviews,
    check_id,
)
from hitl.text import clip, lone_surrogate, visible

log = structlog.get_logger("hitl.bridge")

DEFAULT_DECISIONS = "hitl:decisions"
REPLIES = "hitl:replies:"
UNKNOWN_REPLIES = f"{REPLIES}unknown"
"""Where a message that names no approval is answered (not JSON, not an object, no id)."""
INVALID_REPLIES = f"{REPLIES}invalid"
"""Where a message whose correlation id is not a well-formed approval id is answered."""
MAX_MESSAGE_BYTES = 96 * 1024
SCAN_BYTES = 1024 * 1024
"""How much of an oversized or unreadable message is searched for its correlation id."""
MAX_SEEN = 10_000
"""Signatures remembered against replay; each is kept only while it could still verify."""
KINDS = (DecisionKind.APPROVE, DecisionKind.REJECT, DecisionKind.MODIFY)
"""What the bridge takes: the decisions on an approval announced on Redis. A standing
approval is revoked through the review API or `hitl revoke`."""
UNSIGNED_FIELDS = ("correlation_id",)
"""What a message may carry besides the signed decision: the reply's routing only."""
TOKEN_REFUSAL = (
    "tokens must never be sent over Redis: every subscriber has seen this one, so have it "
    "replaced (`hitl reviewers add NAME` issues a new one). Sign the decision with your own "
    "key instead: HITL_SIGNER=<your name>, HITL_SIGNING_KEY=<your key, `hitl reviewers "
    "key`>, then `hitl bridge send approve ID --digest DIGEST` (or "
    "hitl.bridge.signed_message in your tool)"
)
_KEY = re.compile(rb'"correlation_id"\s*:\s*')
_VALUE = re.compile(rb'"([A-Za-z0-9_.:-]{1,100})"')


class Refused(Exception):
    """The bridge's own refusal: a sentence, and its `RefusalCode`."""

    def __init__(self, message: str, code: RefusalCode | str | None) -> None:
        super().__init__(message)
        self.code = code


def _validated(kind: str, fields: dict[str, Any]) -> AnyDecision:
    """The decision `fields` make, with the one model of its kind (hitl.decisions)."""
    return DECISION_MODELS[DecisionKind(kind)].model_validate(fields)


def reply_channel(correlation: object) -> str:
    """The channel a reply goes to: only a well-formed approval id may name one."""
    if correlation is None:
        return UNKNOWN_REPLIES
    if not isinstance(correlation, str):
        return INVALID_REPLIES
    try:
        return REPLIES + check_id(correlation)
    except ReviewError:
        return INVALID_REPLIES


def scanned_correlation(raw: bytes) -> str | None:
    """The correlation id of a message that won't be parsed (too large, not JSON), looked
    for in its first SCAN_BYTES: the id when well-formed, "" when the key holds anything
    else, None when there is no such key."""
    head = raw[:SCAN_BYTES]
    key = _KEY.search(head)
    if key is None:
        return None
    value = _VALUE.match(head, key.end())
    return value.group(1).decode() if value else ""


class SeenSignatures:
    """Signatures already taken, each kept until it expires; bounded in number.

    Only verified signatures are added, so filling it needs a reviewer's key; when full,
    the ones closest to expiry go first (the run still refuses a repeated decision_id).
    """

    def __init__(self, limit: int = MAX_SEEN) -> None:
        self.limit = limit
        self._until: dict[tuple[str, str], datetime] = {}

    def __len__(self) -> int:
        return len(self._until)

    def take(self, issuer: str, signature: str, issued_at: datetime, now: datetime) -> bool:
        """Record a signature; False if it was taken already (a replay)."""
        key = (issuer, signature)
        if key in self._until and self._until[key] >= now:
            return False
        if len(self._until) >= self.limit:
            self._until = {k: t for k, t in self._until.items() if t >= now}
            if len(self._until) >= self.limit:
                kept = sorted(self._until.items(), key=lambda item: item[1])[-(self.limit - 1) :]
                self._until = dict(kept)
        self._until[key] = issued_at + SIGNATURE_LIFETIME
        return True


def signed_message(
    kind: str,
    approval_id: str,
    action_digest: str,
    *,
    comment: str = "",
    reason: str = "",
    args: dict[str, Any] | None = None,
    scope: str | None = None,
    max_risk: int | None = None,
    decision_id: str | None = None,
    signer: tuple[str, bytes] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A decision message for `hitl:decisions`, signed with the reviewer's own key.

    `signer` is (your reviewer name, your key); by default this process's own
    (`HITL_SIGNER`, `HITL_SIGNING_KEY`). `action_digest` is the one the approval was
    announced with (`action_digest` on `hitl:approvals`, or `hitl show`): the decision
    then applies only to that exact action. Valid for 15 minutes, once.
    """
    from hitl.reviewers import signer as own_signer

    found = signer or own_signer()
    if found is None:
        raise ReviewerConfigError(
            f"set {SIGNER_ENV} (your reviewer name) and {SIGNING_KEY_ENV} (your key, `hitl "
            "reviewers key`, also listed in the bridge's HITL_DECISION_KEYS) to sign decisions"
        )
    name, key = found
    if name == API_ISSUER:
        raise ReviewerConfigError(
            f"{SIGNER_ENV} is your reviewer name: the bridge refuses decisions signed as "
            f"{API_ISSUER!r}"
        )
    if kind not in KINDS:
        raise ReviewError("kind is approve, reject or modify")
    if kind == "reject" and not reason:
        raise ReviewError("a rejection needs a reason (the agent reads it)")
    decision: dict[str, Any] = {
        "approval_id": check_id(approval_id),
        "kind": kind,
        "reviewer": name,
        "decision_id": decision_id or f"dec_{uuid.uuid4().hex[:16]}",
        "action_digest": action_digest,
        **({"reason": reason} if kind == "reject" else {"comment": comment}),
    }
    if kind == "modify":
        decision["args"] = args
    if scope is not None:
        decision["scope"] = scope
    if max_risk is not None:
        decision["max_risk"] = max_risk
    try:
        _validated(kind, decision)
    except ValidationError as error:
        raise ReviewError(f"malformed {kind}: {format_validation_error(error)}") from None
    return {"correlation_id": approval_id, **sign(decision, name, key, now)}


def _refused(refusal: str, code: str | None) -> dict[str, Any]:
    return {
        "outcome": "refused",
        "refusal": refusal,
        "code": str(code) if code else None,
        "entry": None,
    }


class RedisBridge:
    def __init__(
        self,
        client: Client,
        redis_url: str,
        reviewers: str | Path | None = None,
        keys: Mapping[str, bytes] | None = None,
        decisions: str = DEFAULT_DECISIONS,
        insecure_no_auth: bool = False,
    ) -> None:
        """`reviewers`: the reviewers file (default HITL_REVIEWERS), read again for every
        message; `keys`: the issuers' keys (default HITL_DECISION_KEYS)."""
        self.reviewers = reviewers or os.environ.get(REVIEWERS_ENV) or None
        self.keys = dict(decision_keys() if keys is None else keys)
        self.insecure = insecure_no_auth
        if not insecure_no_auth:
            if not self.reviewers or not load_config(self.reviewers).reviewers:
                raise ReviewerConfigError(
                    "no reviewers file: set HITL_REVIEWERS (`hitl reviewers add NAME`), or pass "
                    "--insecure-no-auth to believe any reviewer name in a message"
                )
            if not any(issuer != API_ISSUER for issuer in self.keys):
                raise ReviewerConfigError(
                    "set HITL_DECISION_KEYS (name:key,...) to the reviewers' own keys: the "
                    "bridge takes only decisions signed by their reviewer (`hitl reviewers key`)"
                )
        self.client = client
        self.redis_url = redis_url
        self.decisions = decisions
        # Forwarded as signed, never re-signed; only --insecure-no-auth signs (as the
        # process's own issuer, if it has a key), since there is no reviewer signature.
        self.reviews = Reviews(client, signer=True if insecure_no_auth else None)
        self.seen = SeenSignatures()

    def _fields(self, message: dict[str, Any]) -> tuple[dict[str, Any], AnyDecision]:
        """The decision a message carries, as sent, and its model; Refused with the reason."""
        if "token" in message:
            log.warning("bridge.token_refused", reviewer=clip(str(message.get("reviewer")), 100))
            raise Refused(TOKEN_REFUSAL, RefusalCode.UNAUTHENTICATED)
        if lone_surrogate(message) is not None:
            raise Refused(
                "the message contains text that is not valid Unicode", RefusalCode.MALFORMED
            )
        kind = message.get("kind")
        if kind not in KINDS:
            raise Refused("kind must be approve, reject or modify", RefusalCode.MALFORMED)
        fields = {name: value for name, value in message.items() if name not in UNSIGNED_FIELDS}
        fields.setdefault("approval_id", message.get("correlation_id"))
        if message.get("correlation_id", fields["approval_id"]) != fields["approval_id"]:
            raise Refused(
                "correlation_id and approval_id name different approvals", RefusalCode.MALFORMED
            )
        if not isinstance(fields["approval_id"], str):
            raise Refused(
                "approval_id (the approval the decision is for) is missing", RefusalCode.MALFORMED
            )
        if self.insecure:
            for name in ("issuer", "issued_at", "signature"):
                fields.pop(name, None)
            if not isinstance(fields.get("reviewer"), str):
                raise Refused(
                    "reviewer is missing (this bridge runs without authentication)",
                    RefusalCode.MALFORMED,
                )
        if kind == "reject" and not fields.get("reason"):
            raise Refused("a rejection needs a reason (the agent reads it)", RefusalCode.MALFORMED)
        try:
            return fields, _validated(kind, fields)
        except ValidationError as error:
            raise Refused(
                f"malformed {kind}: {format_validation_error(error)}", RefusalCode.MALFORMED
            ) from None

    def _verify(self, fields: dict[str, Any], now: datetime) -> None:
        """The reviewer's own signature, once, on a decision bound to one action."""
        issuer, signature = fields.get("issuer"), fields.get("signature")
        if not issuer or not signature:
            raise Refused(
                "unsigned: sign the decision with your own key (HITL_SIGNER, "
                "HITL_SIGNING_KEY; `hitl bridge send` or hitl.bridge.signed_message)",
                RefusalCode.UNAUTHENTICATED,
            )
        if issuer == API_ISSUER:
            raise Refused(
                f"the bridge takes only decisions signed with their reviewer's own key, not "
                f"{API_ISSUER!r}'s",
                RefusalCode.UNAUTHENTICATED,
            )
        if not fields.get("decision_id"):
            raise Refused(
                "a decision over Redis carries a decision_id (it is taken once)",
                RefusalCode.MALFORMED,
            )
        if not fields.get("action_digest"):
            raise Refused(
                "a decision over Redis names the action it decides (action_digest, as "
                "announced on hitl:approvals)",
                RefusalCode.MALFORMED,
            )
        refusal = verify(fields, self.keys, now)
        if refusal is not None:
            raise Refused(f"unauthorized: {refusal}", RefusalCode.UNAUTHENTICATED)
        issued = datetime.fromisoformat(str(fields["issued_at"]))
        if not self.seen.take(str(issuer), str(signature), issued, now):
            raise Refused(
                "replayed: this signed decision was already received; sign a new one "
                "(a new decision_id)",
                RefusalCode.UNAUTHENTICATED,
            )

    async def handle(self, raw: bytes | str) -> dict[str, Any]:
        """One message in, the reply out (published on `reply["channel"]`)."""
        began = time.perf_counter()
        data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        correlation: Any = None
        reviewer: str | None = None
        decision_id: Any = None
        try:
            if len(data) > MAX_MESSAGE_BYTES:
                correlation = scanned_correlation(data)
                raise Refused(
                    f"the message is over {MAX_MESSAGE_BYTES:,} bytes", RefusalCode.MALFORMED
                )
            try:
                message = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                correlation = scanned_correlation(data)
                raise Refused(f"not JSON: {error}", RefusalCode.MALFORMED) from None
            if not isinstance(message, dict):
                raise Refused("a decision message is a JSON object", RefusalCode.MALFORMED)
            correlation = message.get("correlation_id", message.get("approval_id"))
            if reply_channel(correlation) == INVALID_REPLIES:
                raise Refused(
                    "correlation_id is not an approval id (letters, digits and _.:- up to 100 "
                    "characters); replies to it go to hitl:replies:invalid",
                    RefusalCode.MALFORMED,
                )
            decision_id = message.get("decision_id")
            fields, decision = self._fields(message)
            reviewer = decision.reviewer
            config = None
            if not self.insecure:
                self._verify(fields, datetime.now(UTC))
                try:
                    config = load_config(self.reviewers)
                except ReviewerConfigError as error:
                    raise Refused(
                        f"the bridge's reviewers file is unusable: {error}",
                        RefusalCode.UNVERIFIABLE,
                    ) from None
            record = await self.reviews.get(decision.approval_id)
            if config is not None:
                refusal = config.refusal(
                    decision.reviewer,
                    decision.kind,
                    record.action_json.tool,
                    record.risk,
                    record.context.requested_by,
                    getattr(decision, "scope", None),
                    getattr(decision, "max_risk", None),
                    escalated_to=record.escalated_to,
                )
                if refusal:
                    raise Refused(f"forbidden: {refusal}", RefusalCode.NOT_ALLOWED)
                outcome = await self.reviews.forward(decision, fields, record.session_id)
            else:
                outcome = await self.reviews.decide(decision, workflow_id=record.session_id)
            if outcome.rejected:
                raise Refused(outcome.rejected, outcome.refusal_code)
            if outcome.ended:
                raise Refused(
                    f"the run has ended; approval {decision.approval_id} was decided",
                    RefusalCode.RUN_ENDED,
                )
            entry = outcome.entry
            reply: dict[str, Any] = {
                "outcome": entry.outcome if entry else "sent",
                "refusal": entry.refusal if entry else None,
                "code": outcome.refusal_code,
                "entry": entry.model_dump(mode="json") if entry else None,
            }
        except Refused as error:
            reply = _refused(str(error), error.code)
        except ReviewError as error:
            reply = _refused(str(error), error.code)
        except Exception as error:  # Temporal unreachable, a bug: answer, keep listening
            log.exception("bridge.failed")
            reply = _refused(
                f"the bridge could not send the decision: {type(error).__name__}: "
                f"{clip(visible(str(error)), 300)}",
                RefusalCode.UNVERIFIABLE,
            )
        if reply["outcome"] == "refused":
            # Worded from the code, never from the sentence: scripts and chat read this.
            reply["title"] = form_of(reply["code"]).title
        channel = reply_channel(correlation)
        own = channel not in (UNKNOWN_REPLIES, INVALID_REPLIES)
        reply["correlation_id"] = correlation if own else None
        reply["decision_id"] = decision_id if own and isinstance(decision_id, str) else None
        reply["reviewer"] = reviewer
        reply["channel"] = channel
        reply["seconds"] = round(time.perf_counter() - began, 4)
        log.info(
            "bridge.decision",
            correlation_id=reply["correlation_id"],
            channel=channel,
            outcome=reply["outcome"],
            code=reply.get("code"),
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
        log.info("bridge.listening", channel=self.decisions, insecure=self.insecure)
        try:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                reply = await self.handle(message["data"])
                await connection.publish(reply["channel"], json.dumps(reply, ensure_ascii=True))
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
        decisions=os.environ.get("HITL_REDIS_DECISIONS") or DEFAULT_DECISIONS,
        insecure_no_auth=insecure_no_auth,
    )
    if insecure_no_auth:
        log.warning(
            "bridge.insecure",
            note="--insecure-no-auth: the reviewer named in a message is believed; anyone who "
            "can publish on the decisions channel decides as anyone",
            signed_as=(signer() or ("nobody",))[0],
        )
    await bridge.run()


# --- `hitl bridge send`: what a reviewer's machine runs -----------------------------------


async def send(
    redis_url: str,
    message: dict[str, Any],
    decisions: str = DEFAULT_DECISIONS,
    wait: float = 30.0,
) -> dict[str, Any] | None:
    """Publish a signed message and wait for the bridge's reply (None: none came)."""
    import redis.asyncio as redis

    connection = redis.from_url(redis_url)
    pubsub = connection.pubsub()
    try:
        await pubsub.subscribe(reply_channel(message.get("correlation_id")))
        try:
            async with asyncio.timeout(wait):
                # Subscribed before publishing, or a quick reply could be missed.
                while ((await pubsub.get_message(timeout=wait)) or {}).get("type") != "subscribe":
                    pass
                await connection.publish(decisions, json.dumps(message, ensure_ascii=True))
                async for reply in pubsub.listen():
                    if reply.get("type") != "message":
                        continue
                    answer: dict[str, Any] = json.loads(reply["data"])
                    # Others decide the same approval: their replies share the channel, and
                    # anyone may publish there, so only the reply naming this decision is it.
                    if answer.get("decision_id") == message.get("decision_id"):
                        return answer
        except TimeoutError:
            return None
    finally:
        await pubsub.aclose()
        await connection.aclose()
    return None


def add_send_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `hitl bridge send`."""
    parser.description = (
        "Sign a decision with your own key (HITL_SIGNER, HITL_SIGNING_KEY) and publish it "
        "for `hitl bridge redis` (HITL_REDIS_URL, HITL_REDIS_DECISIONS); no token is sent. "
        "Exit 0 applied, 1 refused, 2 usage or no reply."
    )
    parser.add_argument("kind", choices=[str(kind) for kind in KINDS])
    parser.add_argument("id", help="the approval id (correlation_id on hitl:approvals)")
    parser.add_argument(
        "--digest", required=True, help="the action_digest the approval was announced with"
    )
    parser.add_argument("--comment", default="", help="approve, modify: a note")
    parser.add_argument("--reason", default="", help="reject: why (the agent reads it)")
    parser.add_argument("--args", help="modify: the new arguments as a JSON object")
    parser.add_argument("--scope", choices=("once", "action", "tool"))
    parser.add_argument("--max-risk", type=int)
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a reply")
    return parser


async def send_command(args: argparse.Namespace) -> int:
    """`hitl bridge send KIND ID --digest D ...`: 0 applied, 1 refused, 2 usage/no reply."""
    url = os.environ.get("HITL_REDIS_URL")
    if not url:
        print("hitl: set HITL_REDIS_URL (redis://host:port/0)", file=sys.stderr)
        return 2
    try:
        message = signed_message(
            args.kind,
            args.id,
            args.digest,
            comment=args.comment,
            reason=args.reason,
            args=json.loads(args.args) if args.args else None,
            scope=args.scope,
            max_risk=args.max_risk,
        )
    except (ReviewerConfigError, ReviewError, json.JSONDecodeError) as error:
        print(f"hitl: {visible(str(error))}", file=sys.stderr)
        return 2
    decisions = os.environ.get("HITL_REDIS_DECISIONS") or DEFAULT_DECISIONS
    reply = await send(url, message, decisions, args.wait)
    if reply is None:
        print(f"hitl: no reply from a bridge within {args.wait:g} s", file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2, ensure_ascii=True))
    if reply.get("outcome") == "refused":
        form = form_of(reply.get("code"))
        print(f"hitl: refused ({form.title})", file=sys.stderr)
        return form.exit
    return 0 if reply.get("outcome") == "applied" else 1
