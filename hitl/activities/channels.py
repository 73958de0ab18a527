"""Where reviewers hear of approvals: chat and email (Apprise), a signed webhook, Redis.

Configured on the worker, each from one setting:

- `HITL_APPRISE_URLS`: Apprise URLs, comma- or space-separated (Slack, Teams, Discord,
  email and the rest: https://github.com/caronc/apprise/wiki).
- `HITL_WEBHOOK_URL` and `HITL_WEBHOOK_SECRET`: a JSON POST signed with HMAC-SHA256 of
  the body in `X-Hitl-Signature: sha256=<hex>` (verify it as you would GitHub's).
- `HITL_REDIS_URL` (and `HITL_REDIS_CHANNEL`, default `hitl:approvals`): a JSON message
  published with the approval id as `correlation_id`; decisions can come back through
  `hitl bridge redis`.
- `HITL_SLACK_BOT_TOKEN` (and `HITL_SLACK_CHANNEL`, `HITL_SLACK_CHANNELS`): pending
  approvals posted as interactive messages, updated in place as they are decided
  (`hitl.chat.slack`, docs/slack.md).
- `HITL_INBOX_URL`: where the inbox is (links in every message).

Each delivery is bounded, whatever the other end does (refuses, accepts and never
answers, answers a byte a second): a try connects within CONNECT_TIMEOUT and ends within
TRY_TIMEOUT; a channel that fails is tried again with backoff while time remains; all
channels run at once, and everything one event sends ends within DEADLINE (5 s). A
failure is logged and never fails the activity, so it never delays the approval or its
timer, and a run ending waits for it at most that long. Each event has one delivery id
(`X-Hitl-Delivery`, `delivery_id` in the JSON), the same on every try and every retry of
the activity, so a receiver can drop duplicates.

Everything a message shows that the model or workspace wrote is escaped for its format:
JSON escapes for the webhook and Redis; for Apprise, markdown escapes where the service
can render markdown (Slack, Discord, Telegram, JSON endpoints: `?format=text` on a URL
says it shows text as it is), plain visible text elsewhere (email shows `delete_files`,
Apprise escapes HTML for HTML services itself).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from hitl.chat.slack import SlackSettings, publish
from hitl.chat.slack import settings as slack_settings
from hitl.models import ApprovalRecord, NotifyEvent
from hitl.text import clip, markdown_text, visible

log = structlog.get_logger("hitl.channels")

DEFAULT_INBOX_URL = "http://127.0.0.1:8000/"
DEFAULT_REDIS_CHANNEL = "hitl:approvals"
ATTEMPTS = 3
FIRST_BACKOFF = 0.5
CONNECT_TIMEOUT = 2.0
"""Seconds a try may take to connect (TCP and TLS)."""
READ_TIMEOUT = 3.0
"""Seconds a try may wait for any one read (an answer, a byte of it)."""
TRY_TIMEOUT = 3.0
"""Seconds one try of one channel may take in all, however slowly the other end answers."""
DEADLINE = 5.0
"""Seconds everything one event sends may take, every channel and every try: one
notify activity attempt returns within this (plus a few milliseconds)."""
DELIVERY_NAMESPACE = uuid.UUID("5d7f3c1e-8a4b-4f0e-9c2d-6b1a0e9f4c73")

TITLES = {
    "pending": "Approval needed",
    "reminder": "Still waiting for a decision",
    "decided": "Approval decided",
    "timed_out": "Approval expired",
    "escalated": "Approval escalated",
    "extended": "Approval deadline extended",
    "voted": "Vote recorded",
}


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None
    message: dict[str, str] | None = None
    """Where the channel put it, for a chat message updated later (Slack: channel, ts)."""


def inbox_link(record: ApprovalRecord, environ: Mapping[str, str] | None = None) -> str:
    base = (os.environ if environ is None else environ).get("HITL_INBOX_URL") or DEFAULT_INBOX_URL
    return f"{base.rstrip('/')}/#/approvals/{record.id}"


def delivery_id(event: NotifyEvent) -> str:
    """One id per event, the same on every try and every retry of the activity: derived
    from the run, the approval, the event and the moment the run announced it."""
    record = event.approval
    name = "\n".join((record.session_id, record.id, event.event, event.at.isoformat()))
    return str(uuid.uuid5(DELIVERY_NAMESPACE, name))


def summary(event: NotifyEvent, link: str) -> dict[str, Any]:
    """What every channel says of an event, as data (JSON escapes it for the wire)."""
    record = event.approval
    data: dict[str, Any] = {
        "event": f"approval.{event.event}",
        "delivery_id": delivery_id(event),
        "correlation_id": record.id,
        "approval_id": record.id,
        "run": record.session_id,
        "status": record.status.value,
        "tool": record.action_json.tool,
        "action": record.effective_action.model_dump(mode="json"),
        "action_digest": record.action_digest,
        "summary": record.preview.summary,
        "risk": record.risk,
        "request": clip(record.context.original_request, 500),
        "requested_by": record.context.requested_by,
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat(),
        "quorum": record.quorum,
        "votes": len(record.votes),
        "reviewer": record.reviewer,
        "reason": record.reason,
        "expired": record.expired,
        "escalated_to": record.escalated_to,
        "link": link,
        "sent_at": event.at.isoformat(),
    }
    return data


def text_message(event: NotifyEvent, link: str, markdown: bool = True) -> tuple[str, str]:
    """Title and body for people, untrusted text made visible (no control character can
    hide a line or reorder text) and, with `markdown`, markdown-escaped for services that
    render it, so nothing in it can pose as a link or format the message."""
    shown = markdown_text if markdown else visible
    record = event.approval
    title = f"{TITLES[event.event]}: {shown(record.action_json.tool)}"
    lines = [
        f"Action: {shown(record.preview.summary)} (risk {record.risk}/100)",
        f"Request: {shown(clip(record.context.original_request, 300))}",
    ]
    if record.context.requested_by:
        lines.append(f"Requested by: {shown(record.context.requested_by)}")
    if event.event == "escalated":
        lines.append(f"Escalated to: {shown(', '.join(record.escalated_to))}")
    if event.event == "voted" and record.votes:
        lines.append(
            f"Vote: {shown(record.votes[-1].reviewer)} ({len(record.votes)} of {record.quorum})"
        )
    if event.event in ("pending", "reminder", "escalated", "extended", "voted"):
        lines.append(f"Expires: {record.expires_at:%Y-%m-%d %H:%M} UTC")
        if record.quorum > 1:
            lines.append(f"Approvals: {len(record.votes)} of {record.quorum}")
    else:
        if record.expired:
            lines.append("Outcome: expired (no decision in time; rejected)")
        else:
            lines.append(f"Outcome: {record.status.value} by {shown(record.reviewer or 'nobody')}")
        if record.reason:
            lines.append(f"Reason: {shown(clip(record.reason, 300))}")
    lines += [f"Approval: {shown(record.id)} in run {shown(record.session_id)}", f"Open: {link}"]
    return title, "\n".join(lines)


async def _with_retries(
    name: str, send: Callable[[], Awaitable[dict[str, str] | None]], deadline: float
) -> Delivery:
    """Try, and try again after a backoff, until it works, ATTEMPTS are used or the
    deadline (event loop time) comes; every try bounded by TRY_TIMEOUT."""
    loop = asyncio.get_running_loop()
    delay = FIRST_BACKOFF
    error = "no time left to try"
    attempt = 0
    while attempt < ATTEMPTS and deadline - loop.time() > 0.05:
        attempt += 1
        try:
            sent = await asyncio.wait_for(send(), min(TRY_TIMEOUT, deadline - loop.time()))
            return Delivery(name, True, attempt, message=sent)
        except Exception as failure:
            text = str(failure) or "no answer in time"
            error = clip(visible(f"{type(failure).__name__}: {text}"), 300)
            log.warning("channel.failed", channel=name, attempt=attempt, error=error)
        if attempt < ATTEMPTS:
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
            delay *= 2
    return Delivery(name, False, attempt, error)


# --- the channels ---------------------------------------------------------------------------


def webhook_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def _webhook(url: str, secret: str | None, data: dict[str, Any]) -> None:
    import httpx

    body = json.dumps(data, ensure_ascii=True, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "hitl-agents",
        "X-Hitl-Event": data["event"],
        "X-Hitl-Delivery": data["delivery_id"],
    }
    if secret:
        headers["X-Hitl-Signature"] = webhook_signature(secret, body)
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    # httpx names the URL in its errors, and a webhook URL is often its own credential
    # (a Slack or Teams hook): what is kept, logged and returned says only what happened.
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise ConnectionError(
            f"the webhook could not be reached ({type(error).__name__})"
        ) from None
    if response.is_error:
        raise ConnectionError(f"the webhook answered HTTP {response.status_code}")


def apprise_urls(urls: str) -> list[str]:
    return [part for part in re.split(r"[\s,]+", urls) if part]


def _apprise_service(url: str) -> tuple[Any, bool]:
    """The Apprise service of a URL, its timeouts bounded, and whether it renders markdown
    (it declares markdown, and its URL doesn't say `?format=text` or `html`)."""
    import apprise

    service = apprise.Apprise.instantiate(url)
    if service is None:
        # Not the URL itself: an Apprise URL holds the service's credentials.
        scheme = re.sub(r"[^a-z0-9+]", "", url.partition(":")[0].lower())[:20]
        raise ValueError(f"not an Apprise URL Apprise understands (scheme {scheme!r})")
    service.socket_connect_timeout = min(service.socket_connect_timeout, CONNECT_TIMEOUT)
    service.socket_read_timeout = min(service.socket_read_timeout, READ_TIMEOUT)
    markdown = service.resolve_format(apprise.NotifyFormat.MARKDOWN)
    return service, markdown == apprise.NotifyFormat.MARKDOWN


async def _apprise(url: str, event: NotifyEvent, link: str) -> None:
    import apprise

    service, markdown = _apprise_service(url)
    title, body = text_message(event, link, markdown=markdown)
    notifier = apprise.Apprise()
    notifier.add(service)
    fmt = apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT
    # A thread can't be cancelled: the service's own socket timeouts (set above) end it
    # soon after the try was given up on.
    sent = await asyncio.to_thread(notifier.notify, title=title, body=body, body_format=fmt)
    if not sent:
        raise ConnectionError("Apprise could not deliver it (see its log)")


async def _redis(url: str, channel: str, data: dict[str, Any]) -> None:
    import redis.asyncio as redis

    client = redis.from_url(
        url, socket_timeout=READ_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
    )
    try:
        await client.publish(channel, json.dumps(data, ensure_ascii=True, sort_keys=True))
    finally:
        await client.aclose()


async def _slack(config: SlackSettings, event: NotifyEvent, link: str) -> dict[str, str] | None:
    from slack_sdk.errors import SlackApiError, SlackClientError

    # The SDK's client is synchronous (see hitl.chat.slack.client): each call is bounded
    # by its own timeout, so a try given up on ends soon after in its thread. Its errors
    # say what Slack answered (`channel_not_found`), never the token.
    try:
        return await asyncio.to_thread(publish, config, event.event, event.approval, link)
    except SlackApiError as error:
        raise ConnectionError(f"Slack answered {error.response.get('error')!r}") from None
    except SlackClientError as error:
        raise ConnectionError(f"Slack could not be reached ({type(error).__name__})") from None
    except OSError as error:
        raise ConnectionError(f"Slack could not be reached ({type(error).__name__})") from None


async def deliver(event: NotifyEvent, environ: Mapping[str, str] | None = None) -> list[Delivery]:
    """Send one event to every configured channel, each independently, none failing."""
    environ = os.environ if environ is None else environ
    deadline = asyncio.get_running_loop().time() + DEADLINE
    link = inbox_link(event.approval, environ)
    data = summary(event, link)
    sends: list[tuple[str, Callable[[], Awaitable[dict[str, str] | None]]]] = []
    # One channel per Apprise URL: a mail server that is down doesn't resend the chat.
    for number, url in enumerate(apprise_urls(environ.get("HITL_APPRISE_URLS") or ""), 1):
        scheme = re.sub(r"[^a-z0-9+]", "", url.partition(":")[0].lower())[:20]
        sends.append((f"apprise:{number}:{scheme}", functools.partial(_apprise, url, event, link)))
    if environ.get("HITL_WEBHOOK_URL"):
        url, secret = environ["HITL_WEBHOOK_URL"], environ.get("HITL_WEBHOOK_SECRET")
        sends.append(("webhook", lambda: _webhook(url, secret, data)))
    if environ.get("HITL_REDIS_URL"):
        redis_url = environ["HITL_REDIS_URL"]
        channel = environ.get("HITL_REDIS_CHANNEL") or DEFAULT_REDIS_CHANNEL
        sends.append(("redis", lambda: _redis(redis_url, channel, data)))
    slack = slack_settings(environ)
    if slack is not None:
        sends.append(("slack", functools.partial(_slack, slack, event, link)))
    return list(
        await asyncio.gather(*(_with_retries(name, send, deadline) for name, send in sends))
    )
