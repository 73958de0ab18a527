"""/slack/interactions: Approve, Reject and Modify clicked in Slack, decided as a reviewer.

A click decides only as the reviewer the reviewers file maps the clicking Slack user to
(`slack_user`), through the same authorizer as every other path (rules, separation of
duties, quorum), signed as the API, and bound to the action digest the button carries:
a click on a message showing an action that has changed since is refused (stale_action).

What is refused before anything is read: a request whose signature (Slack's
`v0:timestamp:body`, HMAC-SHA256 with the signing secret) does not match, whose
timestamp is more than 5 minutes off, or that was seen before (replay). A Slack user not
mapped, or not allowed, gets a message only they see, and nothing is decided.

Slack wants an answer within 3 s: a click is answered at once, and decided after
(the outcome updates the message, a refusal comes as that private message). A modal's
submission is answered when checked: a reason is required, modified arguments are
checked against the tool's schema, and what is wrong is shown in the modal.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import structlog
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from hitl.api.deps import ApiState, State
from hitl.api.errors import ApiError, validation_sentence
from hitl.arguments import schema_problem
from hitl.chat import ButtonValue, card
from hitl.chat import slack as chat
from hitl.decisions import AnyDecision, describe_entry, form_of
from hitl.models import ApprovalRecord, ApproveDecision, ModifyDecision, RejectDecision
from hitl.reviews import ReviewError
from hitl.text import clip

log = structlog.get_logger("hitl.slack")
# Not in the review API's schema: Slack calls it, signed with the app's secret, not a reviewer.
router = APIRouter(prefix="/slack", tags=["slack"], include_in_schema=False)

MAX_AGE = 300
"""Seconds a request's timestamp may be off (Slack's own advice: 5 minutes)."""
SEEN_LIMIT = 10_000
"""Signatures remembered against replay; older than MAX_AGE they are refused as stale."""
REASON_CHARS = 2000
ARGS_CHARS = 3000
"""Slack's limit on a plain text input."""


@dataclass
class SlackReceiver:
    """The serving process's Slack settings: the signing secret (verifies requests) and
    the bot token (private replies, modals, updating the message)."""

    signing_secret: str
    settings: chat.SlackSettings | None
    inbox_url: str
    seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def __repr__(self) -> str:  # never a secret in a log or a traceback
        return "SlackReceiver()"

    def replayed(self, signature: str, now: float) -> bool:
        """Whether this signature was seen in the last MAX_AGE s; remembers it."""
        while self.seen and (
            len(self.seen) >= SEEN_LIMIT or next(iter(self.seen.values())) < now - 2 * MAX_AGE
        ):
            self.seen.popitem(last=False)
        if signature in self.seen:
            return True
        self.seen[signature] = now
        return False

    def link(self, approval_id: str) -> str:
        return f"{self.inbox_url.rstrip('/')}/#/approvals/{approval_id}"


def receiver(environ: Mapping[str, str] | None = None) -> SlackReceiver | None:
    """From `HITL_SLACK_SIGNING_SECRET` (and `HITL_SLACK_BOT_TOKEN`, `HITL_INBOX_URL`)."""
    environ = os.environ if environ is None else environ
    secret = (environ.get(chat.SIGNING_SECRET_ENV) or "").strip()
    if not secret:
        return None
    return SlackReceiver(
        secret,
        chat.settings(environ),
        environ.get("HITL_INBOX_URL") or "http://127.0.0.1:8000/",
    )


def _refuse(status: int, sentence: str) -> ApiError:
    return ApiError(status, sentence)


@router.post("/interactions", summary="Slack interactivity (signed by Slack)")
async def interactions(request: Request, state: State, tasks: BackgroundTasks) -> Response:
    """Slack's interactivity request URL. Only requests Slack signed are read."""
    slack: SlackReceiver | None = getattr(request.app.state, "slack", None)
    if slack is None:
        raise _refuse(404, "Slack is not set up on this server (HITL_SLACK_SIGNING_SECRET)")
    body = await request.body()
    stamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    now = time.time()
    if not stamp.isdigit() or abs(now - int(stamp)) > MAX_AGE:
        raise _refuse(401, "the request's timestamp is missing or more than 5 minutes off")
    from slack_sdk.signature import SignatureVerifier

    if not SignatureVerifier(slack.signing_secret).is_valid(body, stamp, signature):
        raise _refuse(401, "the request's Slack signature does not match")
    if slack.replayed(signature, now):
        raise _refuse(401, "this request was received before (a replay)")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        kind = payload["type"]
        user = str(payload["user"]["id"])
    except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError):
        raise _refuse(400, "not a Slack interaction payload") from None
    if kind == "block_actions":
        tasks.add_task(_clicked, state, slack, user, payload)
        return Response(status_code=200)
    if kind == "view_submission":
        return await _submitted(state, slack, user, payload, tasks)
    return Response(status_code=200)


# --- clicks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where the click came from: the message to update, the person to answer."""

    channel: str
    ts: str
    user: str

    def encode(self, value: ButtonValue) -> str:
        return json.dumps(
            {"v": value.encode(), "c": self.channel, "t": self.ts}, separators=(",", ":")
        )

    @staticmethod
    def decode(text: str, user: str) -> tuple[_Where, ButtonValue] | None:
        try:
            data = json.loads(text)
            value = ButtonValue.decode(data["v"])
            where = _Where(str(data["c"]), str(data["t"]), user)
        except (KeyError, TypeError, ValueError):
            return None
        return (where, value) if value is not None else None


async def _call(slack: SlackReceiver, method: str, **arguments: Any) -> Any:
    """One Web API call with the bot token, in a thread (the SDK's client is synchronous);
    a failure is logged, never raised: Slack's trouble decides nothing."""
    if slack.settings is None:
        log.warning("slack.no_token", method=method)
        return None
    web = chat.client(slack.settings)
    try:
        return await asyncio.to_thread(getattr(web, method), **arguments)
    except Exception as error:
        log.warning("slack.call_failed", method=method, error=type(error).__name__)
        return None


async def _tell(slack: SlackReceiver, where: _Where, text: str) -> None:
    """A message only the clicking user sees."""
    await _call(
        slack,
        "chat_postEphemeral",
        channel=where.channel,
        user=where.user,
        text=chat.escape(clip(text, 2000)),
    )


async def _refresh(slack: SlackReceiver, where: _Where, record: ApprovalRecord | None) -> None:
    if record is None or not where.ts:
        return
    shown = card(record, slack.link(record.id))
    await _call(
        slack,
        "chat_update",
        channel=where.channel,
        ts=where.ts,
        text=chat.fallback_text(shown),
        blocks=chat.blocks(shown),
    )


def _reviewer(state: ApiState, user: str) -> tuple[str | None, str | None]:
    """(reviewer, why not): the reviewer this Slack user is in the reviewers file."""
    try:
        config = state.config
    except ApiError as error:
        return None, error.detail
    reviewer = config.by_slack_user(user)
    if reviewer is None:
        return None, (
            f"Your Slack account ({user}) is not mapped to a reviewer, so your click decides "
            "nothing. Ask an admin to add `slack_user` to your entry in the reviewers file."
        )
    return reviewer.name, None


async def _allowed(
    state: ApiState, name: str, kind: str, value: ButtonValue
) -> tuple[ApprovalRecord | None, str | None]:
    """(record, why not): the approval, and whether this reviewer may decide it so."""
    try:
        record = await state.reviews.get(value.approval_id)
        config = state.config
    except (ReviewError, ApiError) as error:
        return None, str(error)
    refusal = config.refusal(
        name,
        kind,
        record.action_json.tool,
        record.risk,
        record.context.requested_by,
        # Those it was escalated to may decide it from then on, as on every other path.
        escalated_to=record.escalated_to,
    )
    return record, refusal


async def _clicked(state: ApiState, slack: SlackReceiver, user: str, payload: Any) -> None:
    """A click, after Slack was answered: whatever goes wrong ends here, logged."""
    try:
        await _click(state, slack, user, payload)
    except Exception as error:
        log.warning("slack.click_failed", error=type(error).__name__)


async def _click(state: ApiState, slack: SlackReceiver, user: str, payload: Any) -> None:
    try:
        action = payload["actions"][0]
        action_id = str(action["action_id"])
        value = ButtonValue.decode(action.get("value"))
        container = payload.get("container") or {}
        channel = str((payload.get("channel") or {}).get("id") or container.get("channel_id"))
        where = _Where(channel, str(container.get("message_ts") or ""), user)
    except (KeyError, IndexError, TypeError):
        return
    if action_id == chat.OPEN or value is None:
        return
    kind = {chat.APPROVE: "approve", chat.REJECT: "reject", chat.MODIFY: "modify"}.get(action_id)
    if kind is None:
        return
    name, why = _reviewer(state, user)
    if name is None:
        await _tell(slack, where, why or "not a reviewer")
        return
    record, refusal = await _allowed(state, name, kind, value)
    if refusal is not None or record is None:
        await _tell(slack, where, f"Not decided: {refusal}")
        return
    if kind == "approve":
        try:
            decision = ApproveDecision(
                approval_id=value.approval_id,
                reviewer=name,
                comment="approved in Slack",
                action_digest=value.action_digest,
            )
        except ValidationError as error:
            await _tell(slack, where, f"Not decided: {validation_sentence(error)}")
            return
        # To the run that holds the approval the authorizer just read, whatever the
        # button says (it names the run only to find the message's context).
        await _send(state, slack, where, decision, record.session_id)
    elif kind == "reject":
        await _call(slack, "views_open", trigger_id=payload.get("trigger_id"),
                    view=_reject_view(record, where.encode(value)))  # fmt: skip
    else:
        await _call(slack, "views_open", trigger_id=payload.get("trigger_id"),
                    view=_modify_view(record, where.encode(value)))  # fmt: skip


async def _send(
    state: ApiState, slack: SlackReceiver, where: _Where, decision: AnyDecision, workflow_id: str
) -> None:
    """Decide through the reviews library (signed as the API), then make the message say
    what became of it, and tell the user privately when it was refused."""
    try:
        outcome = await state.reviews.decide(decision, workflow_id=workflow_id)
    except ReviewError as error:
        await _tell(slack, where, f"Not decided: {error}")
        return
    except Exception as error:
        log.warning("slack.decide_failed", error=type(error).__name__)
        await _tell(slack, where, "Not decided: the review server could not reach the run")
        return
    entry = outcome.entry
    code = outcome.refusal_code
    if outcome.rejected is not None or outcome.ended:
        title = form_of(code).title
        await _tell(slack, where, f"Not decided ({title}): {outcome.rejected or 'the run ended'}")
    elif entry is None:
        await _tell(slack, where, "Sent; the run has not confirmed it yet (no worker running?)")
    elif entry.outcome != "applied":
        title = form_of(code).title
        await _tell(slack, where, f"Not decided ({title}, {code}): {entry.refusal or ''}")
    else:
        log.info("slack.decided", approval_id=decision.approval_id, reviewer=decision.reviewer,
                 what=describe_entry(entry, outcome.record))  # fmt: skip
        if outcome.record is not None:
            state.feed.announce(outcome.record)
    await _refresh(slack, where, outcome.record)


# --- modals ------------------------------------------------------------------------------------


def _title(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": False}


def _reject_view(record: ApprovalRecord, metadata: str) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": chat.REJECT_VIEW,
        "private_metadata": metadata,
        "title": _title("Reject"),
        "submit": _title("Reject"),
        "close": _title("Cancel"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text":
                f"Reject {chat.code(record.preview.summary)}? The agent reads your reason."}},
            {"type": "input", "block_id": "reason", "label": _title("Reason"), "element": {
                "type": "plain_text_input", "action_id": "reason", "multiline": True,
                "max_length": REASON_CHARS}},
        ],
    }  # fmt: skip


def _modify_view(record: ApprovalRecord, metadata: str) -> dict[str, Any]:
    args = json.dumps(record.effective_action.args, indent=2, ensure_ascii=False)
    return {
        "type": "modal",
        "callback_id": chat.MODIFY_VIEW,
        "private_metadata": metadata,
        "title": _title("Modify"),
        "submit": _title("Run with these"),
        "close": _title("Cancel"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "verbatim": True, "text":
                f"Arguments of {chat.code(record.action_json.tool)}, as JSON; checked "
                "against the tool's schema before anything is sent."}},
            {"type": "input", "block_id": "args", "label": _title("Arguments (JSON)"),
             "element": {"type": "plain_text_input", "action_id": "args", "multiline": True,
                         "max_length": ARGS_CHARS, "initial_value": args[:ARGS_CHARS]}},
            {"type": "input", "block_id": "comment", "optional": True,
             "label": _title("Comment"), "element": {"type": "plain_text_input",
                                                     "action_id": "comment", "max_length": 500}},
        ],
    }  # fmt: skip


def _field(payload: Any, block: str) -> str:
    values = ((payload.get("view") or {}).get("state") or {}).get("values") or {}
    value = (values.get(block) or {}).get(block) or {}
    return str(value.get("value") or "")


def _errors(**errors: str) -> JSONResponse:
    return JSONResponse({"response_action": "errors", "errors": errors})


async def _submitted(
    state: ApiState, slack: SlackReceiver, user: str, payload: Any, tasks: BackgroundTasks
) -> Response:
    view = payload.get("view") or {}
    callback = view.get("callback_id")
    found = _Where.decode(str(view.get("private_metadata") or ""), user)
    if callback not in (chat.REJECT_VIEW, chat.MODIFY_VIEW) or found is None:
        return Response(status_code=200)
    where, value = found
    name, why = _reviewer(state, user)
    if name is None:
        return _errors(**{"reason" if callback == chat.REJECT_VIEW else "args": why or "no"})
    if callback == chat.REJECT_VIEW:
        reason = _field(payload, "reason").strip()
        if not reason:
            return _errors(reason="Say why: the agent reads it.")
        # Asked again: the reviewers file may have changed since the modal opened.
        rejected, refusal = await _allowed(state, name, "reject", value)
        if rejected is None or refusal is not None:
            return _errors(reason=clip(f"Not allowed: {refusal}", 300))
        try:
            decision: AnyDecision = RejectDecision(
                approval_id=value.approval_id,
                reviewer=name,
                reason=clip(reason, REASON_CHARS),
                action_digest=value.action_digest,
            )
        except ValidationError as error:
            return _errors(reason=clip(validation_sentence(error), 300))
        tasks.add_task(_send, state, slack, where, decision, rejected.session_id)
        return Response(status_code=200)
    try:
        args = json.loads(_field(payload, "args"))
    except ValueError as error:
        return _errors(args=f"Not JSON: {error}"[:300])
    if not isinstance(args, dict):
        return _errors(args="The arguments are a JSON object.")
    record, refusal = await _allowed(state, name, "modify", value)
    if record is None or refusal is not None:
        return _errors(args=clip(f"Not allowed: {refusal}", 300))
    problem = schema_problem(record, args)
    if problem is not None:
        return _errors(args=clip(f"Invalid for {record.action_json.tool}: {problem}", 300))
    try:
        decision = ModifyDecision(
            approval_id=value.approval_id,
            reviewer=name,
            args=args,
            comment=_field(payload, "comment").strip(),
            action_digest=value.action_digest,
        )
    except ValidationError as error:
        # A decision's own bounds (sizes, depth): said in the modal, nothing sent.
        return _errors(args=clip(validation_sentence(error), 300))
    tasks.add_task(_send, state, slack, where, decision, record.session_id)
    return Response(status_code=200)
