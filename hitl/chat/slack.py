"""Slack: an approval as a Block Kit message, its buttons, and the worker's settings.

Escaping, for every text the model, the workspace or a person wrote: first made visible
(`hitl.text.visible`: no control character can hide or reorder text), then `&`, `<`, `>`
as Slack's entities (so no `<!channel>`, `<@U123>` or `<https://x|click>` can form), and
shown as code (inline or a block), where Slack applies no `*bold*`, `_italic_`, `~strike~`
nor emoji; a backtick, which could close the code, is shown as `ˋ` (U+02CB). Every text
object is `verbatim`, so Slack links nothing by itself either.

Worker settings (environment; the token is read where it is used, never carried):

- `HITL_SLACK_BOT_TOKEN`: the bot token (`xoxb-…`); with it set, pending approvals are
  posted, and later events update the message.
- `HITL_SLACK_CHANNEL`: the default channel id; `HITL_SLACK_CHANNELS`: per tool or risk,
  `tool=C123,risk>=80=C456,...` (the first that matches wins; tool rules first).
- `HITL_SLACK_API_URL`: another Web API base (tests; an Enterprise proxy).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hitl.chat import Card
from hitl.text import visible

TOKEN_ENV = "HITL_SLACK_BOT_TOKEN"
CHANNEL_ENV = "HITL_SLACK_CHANNEL"
CHANNELS_ENV = "HITL_SLACK_CHANNELS"
API_URL_ENV = "HITL_SLACK_API_URL"
SIGNING_SECRET_ENV = "HITL_SLACK_SIGNING_SECRET"
DEFAULT_API_URL = "https://slack.com/api/"

APPROVE, REJECT, MODIFY, OPEN = "hitl_approve", "hitl_reject", "hitl_modify", "hitl_open"
REJECT_VIEW, MODIFY_VIEW = "hitl_reject_view", "hitl_modify_view"
SECTION_CHARS = 3000
"""Slack's limit on a section's text."""


def escape(text: object) -> str:
    """Text for Slack mrkdwn: visible, and `&`, `<`, `>` as entities (Slack's own rule)."""
    shown = visible(str(text), multiline=True)
    return shown.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _uncode(text: str) -> str:
    return escape(text).replace("`", "\u02cb")


def code(text: object) -> str:
    """Untrusted text as inline code: no formatting, mention or link can come of it."""
    shown = _uncode(str(text)).replace("\n", " ")
    return f"`{shown}`" if shown else "(none)"


def code_block(text: object) -> str:
    shown = _uncode(str(text))
    return f"```{shown}```" if shown.strip() else "(none)"


def _mrkdwn(text: str) -> dict[str, Any]:
    if len(text) > SECTION_CHARS:
        closing = "```" if text.endswith("```") else ""
        text = text[: SECTION_CHARS - 40 - len(closing)] + " [clipped]" + closing
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def fallback_text(card: Card) -> str:
    """The notification text (what a phone shows): the tool and the state, escaped."""
    if card.settled:
        return f"Approval {card.status}: {escape(card.tool)}"
    return f"Approval needed: {escape(card.tool)} (risk {card.risk}/100)"


def blocks(card: Card) -> list[dict[str, Any]]:
    """The message: request, reasoning, exact action, preview, risk, who asked, deadline,
    votes, and the buttons while it is pending (the outcome once settled)."""
    head = "Approval needed" if not card.settled else f"Approval {card.status}"
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": head, "emoji": False}},
        _section(
            f"*Tool* {code(card.tool)}   *Risk* {card.risk}/100\n"
            f"*Action* {code(card.summary)}\n"
            f"*Asked by* {code(card.requested_by) if card.requested_by else 'not named'}"
            f"   *Deadline* {card.expires_at:%Y-%m-%d %H:%M} UTC"
        ),
        _section(f"*Request*\n{code_block(card.request)}"),
    ]
    if card.reasoning:
        out.append(_section(f"*Reasoning*\n{code_block(card.reasoning)}"))
    out.append(_section(f"*Arguments*\n{code_block(card.action)}"))
    if card.preview:
        more = f"\n<{card.link}|The whole preview in the inbox>" if card.preview_clipped else ""
        out.append(_section(f"*Preview*\n{code_block(card.preview)}{more}"))
    if card.warnings:
        out.append(_section("*Warnings*\n" + "\n".join(code(w) for w in card.warnings)))
    facts = [f"approval {code(card.approval_id)} in run {code(card.workflow_id)}"]
    if card.quorum > 1:
        voters = ", ".join(code(name) for name in card.votes) or "none yet"
        facts.append(f"approvals {len(card.votes)} of {card.quorum}: {voters}")
    out.append({"type": "context", "elements": [_mrkdwn(" · ".join(facts))]})
    if card.settled:
        said = f"*Outcome* {escape(card.outcome)}" if card.outcome else f"*{card.status}*"
        if card.reason:
            said += f"\n*Reason* {code_block(card.reason)}"
        out.append(_section(said))
        out.append(
            {
                "type": "actions",
                "elements": [_button("Open in inbox", OPEN, card, url=card.link)],
            }
        )
        return out
    out.append(
        {
            "type": "actions",
            "block_id": "hitl_decide",
            "elements": [
                _button("Approve", APPROVE, card, style="primary"),
                _button("Reject", REJECT, card, style="danger"),
                _button("Modify", MODIFY, card),
                _button("Open in inbox", OPEN, card, url=card.link),
            ],
        }
    )
    return out


def _button(
    label: str, action_id: str, card: Card, style: str | None = None, url: str | None = None
) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": False},
        "action_id": action_id,
        "value": card.button.encode(),
    }
    if style:
        button["style"] = style
    if url:
        button["url"] = url
    return button


# --- the worker's Slack settings ---------------------------------------------------------------


@dataclass(frozen=True)
class ChannelRule:
    channel: str
    tool: str | None = None
    min_risk: int | None = None

    def matches(self, tool: str, risk: int) -> bool:
        if self.tool is not None:
            return self.tool == tool
        return self.min_risk is not None and risk >= self.min_risk


_RULE = re.compile(
    r"^(?:tool=(?P<tool>[^=]+)|risk>=(?P<risk>\d{1,3}))=(?P<channel>[A-Za-z0-9_#-]+)$"
)


@dataclass(frozen=True)
class SlackSettings:
    token: str
    default_channel: str | None
    rules: tuple[ChannelRule, ...]
    api_url: str

    def channel_for(self, tool: str, risk: int) -> str | None:
        ordered = sorted(self.rules, key=lambda r: r.tool is None)
        for rule in ordered:
            if rule.matches(tool, risk):
                return rule.channel
        return self.default_channel

    def __repr__(self) -> str:  # never the token, in a log or a traceback
        return f"SlackSettings(channel={self.default_channel!r}, rules={len(self.rules)})"


def settings(environ: Mapping[str, str] | None = None) -> SlackSettings | None:
    """The worker's Slack settings, or None when it is not set up for Slack."""
    environ = os.environ if environ is None else environ
    token = (environ.get(TOKEN_ENV) or "").strip()
    if not token:
        return None
    rules = []
    for item in re.split(r"[\s,]+", environ.get(CHANNELS_ENV) or ""):
        if not item:
            continue
        match = _RULE.match(item)
        if match is None:
            raise ValueError(
                f"{CHANNELS_ENV}: {item[:60]!r} is not tool=NAME=CHANNEL nor risk>=N=CHANNEL"
            )
        risk = match.group("risk")
        rules.append(
            ChannelRule(match.group("channel"), match.group("tool"), int(risk) if risk else None)
        )
    return SlackSettings(
        token=token,
        default_channel=(environ.get(CHANNEL_ENV) or "").strip() or None,
        rules=tuple(rules),
        api_url=(environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/") + "/",
    )


def client(config: SlackSettings, timeout: int = 3) -> Any:
    """slack_sdk's WebClient, each call bounded by `timeout` s, without retries of its own
    (Temporal's are the retries). The synchronous client, run in a thread: the
    AsyncWebClient needs aiohttp, which this project does not otherwise install."""
    from slack_sdk import WebClient

    return WebClient(
        token=config.token, base_url=config.api_url, timeout=timeout, retry_handlers=[]
    )


METADATA_TYPE = "hitl_approval"
HISTORY_PAGES = 3


def find_message(web: Any, channel: str, approval_id: str, since: float) -> str | None:
    """The ts of the message posted for this approval: the channel's messages since the
    approval opened, read for the metadata the post carried (Slack is the store, so any
    worker, after any restart, finds it; `channels:history` scope)."""
    cursor = None
    for _ in range(HISTORY_PAGES):
        page = web.conversations_history(
            channel=channel,
            oldest=f"{since:.6f}",
            inclusive=True,
            include_all_metadata=True,
            limit=200,
            cursor=cursor,
        )
        for message in page.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if (
                metadata.get("event_type") == METADATA_TYPE
                and payload.get("approval_id") == approval_id
            ):
                return str(message["ts"])
        cursor = (page.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    return None


def publish(config: SlackSettings, event: str, record: Any, link: str) -> dict[str, str] | None:
    """Post a pending approval, or update its message in place; (channel, ts) of the
    message, None when there is none to update. Blocking: run it in a thread."""
    from hitl.chat import card as card_of

    channel = config.channel_for(record.action_json.tool, record.risk)
    if channel is None:
        raise ValueError(f"no Slack channel for {record.action_json.tool} ({CHANNEL_ENV})")
    shown = card_of(record, link, timed_out=event == "timed_out")
    web = client(config)
    # Looked up first even for a new approval: a retry of an activity whose post went
    # through updates that message instead of posting a second one.
    ts = find_message(web, channel, record.id, record.created_at.timestamp() - 5)
    text, body = fallback_text(shown), blocks(shown)
    if ts is not None:
        web.chat_update(channel=channel, ts=ts, text=text, blocks=body)
        return {"channel": channel, "ts": ts}
    if event not in ("pending", "reminder"):
        return None  # never announced: an outcome alone is no news to post
    answer = web.chat_postMessage(
        channel=channel,
        text=text,
        blocks=body,
        unfurl_links=False,
        unfurl_media=False,
        metadata={
            "event_type": METADATA_TYPE,
            "event_payload": {"approval_id": record.id, "workflow_id": record.session_id},
        },
    )
    return {"channel": str(answer.get("channel") or channel), "ts": str(answer["ts"])}
