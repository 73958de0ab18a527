"""The example's one activity: send an email, once per approval."""

from __future__ import annotations

import json
import os
from pathlib import Path

from temporalio import activity

from hitl.integrations.openai_agents import approval_key

OUTBOX_ENV = "HITL_EXAMPLE_OUTBOX"


def outbox() -> Path:
    return Path(os.environ.get(OUTBOX_ENV) or ".hitl-example-outbox")


@activity.defn
async def send_email(to: str, subject: str, body: str) -> str:
    """Send an email to a customer."""
    key = approval_key()
    sent = outbox() / f"{key}.json"
    # At least once: a retry after the email went out finds it sent and sends nothing.
    if not sent.exists():
        sent.parent.mkdir(parents=True, exist_ok=True)
        sent.write_text(json.dumps({"to": to, "subject": subject, "body": body}))
    return f"email to {to} sent ({key})"
