"""Reviewers hear of approvals where they work (decisions back through Redis:
tests/test_bridge_trust.py).

Real components, started here: a Redis server process (Debian's redis-server, which
.ci/run installs), a local HTTP receiver standing in for a webhook consumer and for an
Apprise JSON endpoint, a local SMTP server (aiosmtpd), endpoints that never answer, and
the worker of this test session.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from temporalio.client import Client

from hitl import contract
from hitl.devserver import free_port
from hitl.models import ApprovalStatus, RunState
from tests.conftest import NEW_LOGS, OTHER, files_in, make_logs
from tests.helpers import decision, start_run, wait_pending
from tests.redisserver import redis_server

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "webhook-signing-secret-for-tests"
INBOX = "http://inbox.example:8000/"
HOSTILE = "logs/evil\x1b[2K[click](x.example)\u202e.log"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real Redis server on a free loopback port, for this module."""
    with redis_server() as url:
        yield url


class Receiver:
    """A local HTTP endpoint that keeps what it is sent (path, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(headers, body) for where, headers, body in self.requests if where == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    yield receiving
    receiving.server.shutdown()


@pytest.fixture
def channels(receiver: Receiver, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Receiver:
    """Every channel configured on the worker (it runs in this process)."""
    port = receiver.server.server_address[1]
    monkeypatch.setenv("HITL_APPRISE_URLS", f"json://127.0.0.1:{port}/apprise")
    monkeypatch.setenv("HITL_WEBHOOK_URL", f"{receiver.base}/hook")
    monkeypatch.setenv("HITL_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("HITL_REDIS_URL", redis_url)
    monkeypatch.setenv("HITL_INBOX_URL", INBOX)
    return receiver


async def _until(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def verified(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """What a consumer does: check the HMAC of the raw body before trusting it."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, headers["X-Hitl-Signature"]), "bad signature"
    data: dict[str, Any] = json.loads(body)
    assert headers["X-Hitl-Event"] == data["event"]
    return data


@pytest.fixture
async def subscribed(redis_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    connection = redis.from_url(redis_url)
    pubsub = connection.pubsub()
    await pubsub.subscribe("hitl:approvals")

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                messages.append(json.loads(message["data"]))

    reading = asyncio.create_task(read())
    yield messages
    reading.cancel()
    await pubsub.aclose()
    await connection.aclose()


async def test_every_channel_hears_pending_and_decided_with_a_link_and_text_escaped(
    channels: Receiver,
    subscribed: list[dict[str, Any]],
    client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    workspace = make_logs(tmp_path / "ws")
    (workspace / HOSTILE).write_text("old")
    os.utime(workspace / HOSTILE, (time.time() - 30 * 86400,) * 2)
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    assert HOSTILE in record.action_json.args["paths"]
    await _until(lambda: len(channels.on("/hook")) == 1, "the pending webhook")
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice"))
    await handle.result()
    await _until(
        lambda: (
            len(channels.on("/hook")) == 2
            and len(channels.on("/apprise")) == 2
            and len(subscribed) == 2
        ),
        "the decided events",
    )
    link = f"{INBOX}#/approvals/{record.id}"
    hooks = [verified(headers, body) for headers, body in channels.on("/hook")]
    assert [h["event"] for h in hooks] == ["approval.pending", "approval.decided"]
    assert all(h["correlation_id"] == record.id and h["link"] == link for h in hooks)
    assert hooks[1]["status"] == "approved" and hooks[1]["reviewer"] == "alice"
    assert all(b"\x1b" not in body and "\u202e".encode() not in body for _, body in
               channels.on("/hook"))  # fmt: skip
    apprise = [json.loads(body) for _, body in channels.on("/apprise")]
    assert apprise[0]["title"] == "Approval needed: delete\\_files"
    assert f"Open: {link}" in apprise[0]["message"] and "risk" in apprise[0]["message"]
    assert "Outcome: approved by alice" in apprise[1]["message"]
    for message in apprise:
        assert "\x1b" not in message["message"] and "\u202e" not in message["message"]
        assert "[click](" not in message["message"], "a file name can't become a link"
    assert [m["event"] for m in subscribed] == ["approval.pending", "approval.decided"]
    assert all(m["correlation_id"] == record.id for m in subscribed)


async def test_a_timed_out_approval_is_announced_on_every_channel(
    channels: Receiver,
    subscribed: list[dict[str, Any]],
    client: Client,
    task_queue: str,
    workspace: Path,
) -> None:
    handle = await start_run(
        client, task_queue, workspace, tool_approval_timeouts={"delete_files": 1}
    )
    result = await handle.result()
    assert result.approvals[0].reviewer == "system:timeout"
    await _until(
        lambda: len(channels.on("/hook")) == 3 and len(subscribed) == 3, "the timeout events"
    )
    hooks = [verified(headers, body) for headers, body in channels.on("/hook")]
    # A reminder at half the approval's time (0.5 s here), then the timeout.
    assert [h["event"] for h in hooks] == [
        "approval.pending",
        "approval.reminder",
        "approval.timed_out",
    ]
    assert [m["event"] for m in subscribed] == [h["event"] for h in hooks]
    assert (
        "Outcome: rejected by system:timeout"
        in json.loads(channels.on("/apprise")[-1][1])["message"]
    )


async def test_a_channel_that_is_down_costs_the_approval_nothing(
    client: Client, task_queue: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/nobody-listens")
    monkeypatch.setenv("HITL_WEBHOOK_SECRET", SECRET)
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    began = time.monotonic()
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice"))
    result = await asyncio.wait_for(handle.result(), timeout=30)
    finished = time.monotonic() - began
    assert result.state is RunState.COMPLETED
    assert result.approvals[0].status is ApprovalStatus.APPROVED
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    # The down channel was retried for seconds, not minutes, and the run did not wait longer.
    assert finished < 15, finished
    print(f"\nrun finished {finished:.2f} s after the decision, with its webhook down")


async def test_untrusted_text_is_escaped_in_every_message_format() -> None:
    from datetime import UTC, datetime

    from activities.channels import summary, text_message
    from hitl.models import ApprovalContext, ApprovalRecord, NotifyEvent, ToolAction, ToolPreview

    now = datetime.now(UTC)
    action = ToolAction(tool="delete_files", args={"paths": [HOSTILE]})
    record = ApprovalRecord(
        id="apr_1",
        session_id="run\x1b[31m",
        action_json=action,
        action_digest=action.digest(),
        created_at=now,
        expires_at=now,
        context=ApprovalContext(original_request="do it\u202e now <b>", requested_by="eve"),
        preview=ToolPreview(summary=f"delete {HOSTILE} *bold*"),
    )
    event = NotifyEvent(event="pending", approval=record, at=now)
    title, body = text_message(event, "http://inbox/")
    for text in (title, body):
        assert "\x1b" not in text and "\u202e" not in text
    assert "\\*bold\\*" in body and "\\[click\\]" in body
    wire = json.dumps(summary(event, "http://inbox/"), ensure_ascii=True)
    assert "\x1b" not in wire and "\u202e" not in wire
    assert json.loads(wire)["summary"] == f"delete {HOSTILE} *bold*", "data stays exact"
