"""Where reviewers hear of approvals: chat and email (Apprise), a signed webhook, Redis.

Configured on the worker, each from one setting:

- `HITL_APPRISE_URLS`: Apprise URLs, comma- or space-separated (Slack, Teams, Discord,
  email and the rest: https://github.com/caronc/apprise/wiki).
- `HITL_WEBHOOK_URL` and `HITL_WEBHOOK_SECRET`: a JSON POST signed with HMAC-SHA256 of
  the body in `X-Hitl-Signature: sha256=<hex>` (verify it as you would GitHub's).
- `HITL_REDIS_URL` (and `HITL_REDIS_CHANNEL`, default `hitl:approvals`): a JSON message
  published with the approval id as `correlation_id`; decisions can come back through
  `hitl bridge redis`.
- `HITL_INBOX_URL`: where the inbox is (links in every message).

A channel that is down is retried with backoff a few times within a few seconds and
logged; it never fails the activity, so it never delays the run or costs the approval.
Everything a message shows that the model or workspace wrote is escaped for its format.
"""

from __future__ import annotations

import asyncio
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

from hitl.models import ApprovalRecord, NotifyEvent
from hitl.text import clip, markdown_text, visible

log = structlog.get_logger("hitl.channels")

DEFAULT_INBOX_URL = "http://127.0.0.1:8000/"
DEFAULT_REDIS_CHANNEL = "hitl:approvals"
ATTEMPTS = 3
FIRST_BACKOFF = 0.5
TIMEOUT = 5.0
"""Seconds one delivery attempt may take."""

TITLES = {
    "pending": "Approval needed",
    "reminder": "Still waiting for a decision",
    "decided": "Approval decided",
    "timed_out": "Approval timed out",
}


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None


def inbox_link(record: ApprovalRecord, environ: Mapping[str, str] | None = None) -> str:
    base = (os.environ if environ is None else environ).get("HITL_INBOX_URL") or DEFAULT_INBOX_URL
    return f"{base.rstrip('/')}/#/approvals/{record.id}"


def summary(event: NotifyEvent, link: str) -> dict[str, Any]:
    """What every channel says of an event, as data (JSON escapes it for the wire)."""
    record = event.approval
    data: dict[str, Any] = {
        "event": f"approval.{event.event}",
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
        "link": link,
        "sent_at": event.at.isoformat(),
    }
    return data


def text_message(event: NotifyEvent, link: str) -> tuple[str, str]:
    """Title and body for people: untrusted text made visible and markdown-escaped (chat
    services render markdown), so nothing in it can pose as a link or hide a line."""
    record = event.approval
    tool = markdown_text(record.action_json.tool)
    title = f"{TITLES[event.event]}: {tool}"
    lines = [
        f"Action: {markdown_text(record.preview.summary)} (risk {record.risk}/100)",
        f"Request: {markdown_text(clip(record.context.original_request, 300))}",
    ]
    if record.context.requested_by:
        lines.append(f"Requested by: {markdown_text(record.context.requested_by)}")
    if event.event in ("pending", "reminder"):
        lines.append(f"Expires: {record.expires_at:%Y-%m-%d %H:%M} UTC")
        if record.quorum > 1:
            lines.append(f"Approvals: {len(record.votes)} of {record.quorum}")
    else:
        who = markdown_text(record.reviewer or "nobody")
        lines.append(f"Outcome: {record.status.value} by {who}")
        if record.reason:
            lines.append(f"Reason: {markdown_text(clip(record.reason, 300))}")
    lines += [f"Approval: {record.id} in run {markdown_text(record.session_id)}", f"Open: {link}"]
    return title, "\n".join(lines)


async def _with_retries(name: str, send: Callable[[], Awaitable[None]]) -> Delivery:
    delay = FIRST_BACKOFF
    error: str | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            await asyncio.wait_for(send(), TIMEOUT)
            return Delivery(name, True, attempt)
        except Exception as failure:
            error = clip(visible(f"{type(failure).__name__}: {failure}"), 300)
            log.warning("channel.failed", channel=name, attempt=attempt, error=error)
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
    return Delivery(name, False, ATTEMPTS, error)


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
        "X-Hitl-Delivery": str(uuid.uuid4()),
    }
    if secret:
        headers["X-Hitl-Signature"] = webhook_signature(secret, body)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.post(url, content=body, headers=headers)
        response.raise_for_status()


async def _apprise(urls: str, title: str, body: str) -> None:
    import apprise

    notifier = apprise.Apprise()
    for url in (part for part in re.split(r"[\s,]+", urls) if part):
        if not notifier.add(url):
            raise ValueError(f"not an Apprise URL Apprise understands: {clip(url, 80)}")
    sent = await asyncio.to_thread(
        notifier.notify, title=title, body=body, body_format=apprise.NotifyFormat.TEXT
    )
    if not sent:
        raise ConnectionError("Apprise could not deliver to every URL (see its log)")


async def _redis(url: str, channel: str, data: dict[str, Any]) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
    try:
        await client.publish(channel, json.dumps(data, ensure_ascii=True, sort_keys=True))
    finally:
        await client.aclose()


async def deliver(event: NotifyEvent, environ: Mapping[str, str] | None = None) -> list[Delivery]:
    """Send one event to every configured channel, each independently, none failing."""
    environ = os.environ if environ is None else environ
    link = inbox_link(event.approval, environ)
    data = summary(event, link)
    title, body = text_message(event, link)
    sends: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    if environ.get("HITL_APPRISE_URLS"):
        urls = environ["HITL_APPRISE_URLS"]
        sends.append(("apprise", lambda: _apprise(urls, title, body)))
    if environ.get("HITL_WEBHOOK_URL"):
        url, secret = environ["HITL_WEBHOOK_URL"], environ.get("HITL_WEBHOOK_SECRET")
        sends.append(("webhook", lambda: _webhook(url, secret, data)))
    if environ.get("HITL_REDIS_URL"):
        redis_url = environ["HITL_REDIS_URL"]
        channel = environ.get("HITL_REDIS_CHANNEL") or DEFAULT_REDIS_CHANNEL
        sends.append(("redis", lambda: _redis(redis_url, channel, data)))
    return list(await asyncio.gather(*(_with_retries(name, send) for name, send in sends)))
