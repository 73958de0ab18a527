"""The email toolkit: send an email after a reviewer approves it, at most once.

Delivery goes to `HITL_SMTP_URL` (`smtp://user:pass@host:port`, `smtps://`,
`smtp+starttls://`), or without it to the workspace's `outbox/` as `.eml` files. Each
message carries `Message-ID: <approval id@hitl-agents>`.
"""

from __future__ import annotations

import os
import re
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlparse

from pydantic import Field, field_validator

from hitl.models import ToolPreview, ToolResult
from hitl.text import quoted
from hitl.toolkits.common import Args, clamp, line_breaking_or_control
from hitl.toolkits.workspace import split_path
from hitl.tools import ToolContext, tool

MAX_SUBJECT_CHARS = 200
MAX_BODY_BYTES = 64 * 1024
MAX_RECIPIENTS = 50
MAX_ADDRESS_CHARS = 254


_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")


class SendEmailArgs(Args):
    """Send an email."""

    to: list[str] = Field(
        min_length=1, description=f"Recipient addresses (at most {MAX_RECIPIENTS})."
    )
    subject: str = Field(
        min_length=1, description=f"One line of at most {MAX_SUBJECT_CHARS} characters."
    )
    body: str = Field(description=f"Plain text, at most {MAX_BODY_BYTES // 1024} KiB.")

    @field_validator("to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]
        return value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_RECIPIENTS:
            raise ValueError(
                f"{len(value)} recipients given; an email goes to at most {MAX_RECIPIENTS}: "
                "send several emails or use a mailing list"
            )
        # A line break in a header value would start another header (header injection),
        # and the message would only fail after the reviewer approved it.
        bad = [
            address
            for address in value
            if len(address) > MAX_ADDRESS_CHARS
            or line_breaking_or_control(address)
            or not _EMAIL.match(address)
        ]
        if bad:
            raise ValueError(f"not an email address: {', '.join(quoted(item) for item in bad)}")
        return value

    @field_validator("subject")
    @classmethod
    def _one_line(cls, subject: str) -> str:
        if not subject.strip():
            raise ValueError("the subject is empty; give a short subject line")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise ValueError(
                f"the subject is {len(subject):,} characters; at most {MAX_SUBJECT_CHARS}: "
                "shorten it and put the rest in the body"
            )
        if line_breaking_or_control(subject):
            raise ValueError(
                "the subject contains a line break or another control character; write it "
                "as one line of plain text"
            )
        return subject

    @field_validator("body")
    @classmethod
    def _bounded(cls, body: str) -> str:
        size = len(body.encode("utf-8", errors="surrogatepass"))
        if size > MAX_BODY_BYTES:
            raise ValueError(
                f"the body is {size:,} bytes; at most {MAX_BODY_BYTES:,} (64 KiB): shorten "
                "it, or write the details to a file and refer to it"
            )
        return body


def _email_risk(args: SendEmailArgs, preview: ToolPreview) -> int:
    return clamp(45 + 5 * len(args.to))


def _sender() -> str:
    return os.environ.get("HITL_EMAIL_FROM", "hitl-agent@localhost")


def _message(args: SendEmailArgs, key: str | None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = _sender()
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject
    if key:
        # Receivers that dedupe on Message-ID see one message per approval.
        message["Message-ID"] = f"<{key}@hitl-agents>"
    message.set_content(args.body)
    return message


@tool(requires_approval=True, risk=_email_risk, idempotent=False)
def send_email(ctx: ToolContext, args: SendEmailArgs) -> ToolResult:
    """Send an email. Needs a human reviewer's approval; sent at most once."""
    key = ctx.approval_id
    message = _message(args, key)
    smtp = os.environ.get("HITL_SMTP_URL")
    if smtp:
        url = urlparse(smtp)
        client_type = smtplib.SMTP_SSL if url.scheme == "smtps" else smtplib.SMTP
        with client_type(url.hostname or "localhost", url.port or 0, timeout=30) as client:
            if url.scheme == "smtp+starttls":
                client.starttls()
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            client.send_message(message)
        where = f"SMTP {url.hostname}"
    else:
        safe = "".join(ch for ch in key or "" if ch.isascii() and (ch.isalnum() or ch in "-_"))
        name = safe[:128] or datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        where = f"outbox/{name}.eml"
        # Through the workspace like any tool path: an `outbox` symlink is refused.
        split_path(where)
        ctx.workspace.write_atomic(where, bytes(message), expected_sha256=None)
    return ToolResult(
        ok=True,
        output={"to": args.to, "subject": args.subject, "delivered_to": where},
        summary=f"sent email to {', '.join(quoted(address) for address in args.to)} via {where}",
    )


@send_email.preview
def preview_email(ctx: ToolContext, args: SendEmailArgs) -> ToolPreview:
    smtp = os.environ.get("HITL_SMTP_URL")
    where = (
        f"SMTP {quoted(urlparse(smtp).hostname or '?')}"
        if smtp
        else "the workspace's outbox/ (no SMTP)"
    )
    to = ", ".join(quoted(address) for address in args.to)
    # Shown as the reviewer reads it, not as encoded on the wire (base64, RFC 2047).
    return ToolPreview(
        summary=f"email {to}: {quoted(args.subject)}",
        details=(
            f"From: {quoted(_sender())}\nTo: {to}\nSubject: {quoted(args.subject)}\n"
            "Message-ID: <approval id@hitl-agents>\n\n"
            f"{args.body}\n\n(delivery: {where})"
        ),
        facts={"recipients": len(args.to), "delivery": "smtp" if smtp else "outbox"},
    )
