"""Reviewers hear of approvals where they work (decisions back through Redis:
tests/test_bridge_trust.py).

Real components, started here: a Redis server process (Debian's redis-server where
installed, else the Valkey server the dev extras put in the venv: tests.redisserver), a
local HTTP receiver standing in for a webhook consumer and for an Apprise JSON endpoint,
a local SMTP server (aiosmtpd), endpoints that never answer, and the worker of this test
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from aiosmtpd.controller import Controller
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from hitl import contract
from hitl.activities.channels import DEADLINE, deliver, summary, text_message
from hitl.activities.notify import notify_reviewers
from hitl.devserver import free_port
from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    NotifyEvent,
    RunState,
    ToolAction,
    ToolPreview,
)
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


class Mailbox:
    """A local SMTP server's handler (aiosmtpd): keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 Message accepted for delivery"


class Receiver:
    """A local HTTP endpoint that keeps what it is sent (path, headers, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.fail_first = 0
        """Answer this many requests with 500 first (a receiver having a bad moment)."""
        received, receiver = self.requests, self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, dict(self.headers.items()), body))
                failing = receiver.fail_first > 0
                receiver.fail_first -= failing
                self.send_response(500 if failing else 200)
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


class Silent:
    """A TCP endpoint that accepts connections and never answers; with `drip`, it answers
    an HTTP status line and headers, then one byte of the body a second."""

    def __init__(self, drip: bool = False) -> None:
        self.drip = drip
        self.connections: list[socket.socket] = []
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)
            if self.drip:
                threading.Thread(target=self._dribble, args=(connection,), daemon=True).start()

    def _dribble(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not self.stopped.wait(1):
                connection.sendall(b"x")

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    endpoint = Silent()
    yield endpoint
    endpoint.close()


@pytest.fixture
def dripping() -> Iterator[Silent]:
    endpoint = Silent(drip=True)
    yield endpoint
    endpoint.close()


def _event(
    kind: str = "pending",
    summary: str = f"delete {HOSTILE} *bold*",
    requested_by: str = "eve",
    at: datetime | None = None,
) -> NotifyEvent:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    action = ToolAction(tool="delete_files", args={"paths": [HOSTILE]})
    record = ApprovalRecord(
        id="apr_1",
        session_id="run\x1b[31m",
        action_json=action,
        action_digest=action.digest(),
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        context=ApprovalContext(original_request="do it\u202e now <b>", requested_by=requested_by),
        preview=ToolPreview(summary=summary),
    )
    return NotifyEvent(event=kind, approval=record, at=at or now)


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
        "Outcome: expired (no decision in time; rejected)"
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
    event = _event()
    for markdown in (True, False):
        title, body = text_message(event, "http://inbox/", markdown=markdown)
        for text in (title, body):
            assert "\x1b" not in text and "\u202e" not in text
            assert "\\x1b" in body, "the control character is shown, escaped"
    title, body = text_message(event, "http://inbox/")
    assert "\\*bold\\*" in body and "\\[click\\]" in body
    wire = json.dumps(summary(event, "http://inbox/"), ensure_ascii=True)
    assert "\x1b" not in wire and "\u202e" not in wire
    assert json.loads(wire)["summary"] == f"delete {HOSTILE} *bold*", "data stays exact"


async def test_one_notify_attempt_ends_within_its_bound_whatever_the_channels_do(
    silent: Silent, dripping: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A webhook that answers a byte a second, a chat service and a Redis that accept
    # connections and never answer: each would hold a naive client for ever.
    monkeypatch.setenv("HITL_WEBHOOK_URL", f"http://127.0.0.1:{dripping.port}/hook")
    monkeypatch.setenv("HITL_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("HITL_APPRISE_URLS", f"json://127.0.0.1:{silent.port}/apprise")
    monkeypatch.setenv("HITL_REDIS_URL", f"redis://127.0.0.1:{silent.port}/0")
    began = time.monotonic()
    deliveries = await ActivityEnvironment().run(notify_reviewers, _event())
    took = time.monotonic() - began
    print(f"\nnotify attempt with every channel hanging: {took:.2f} s (bound {DEADLINE:g} s)")
    assert took < DEADLINE + 0.5, took
    assert {d["channel"] for d in deliveries} == {"apprise:1:json", "webhook", "redis"}
    assert not any(d["ok"] for d in deliveries), deliveries
    assert len(dripping.connections) >= 1 and len(silent.connections) >= 2


async def test_a_webhook_that_never_answers_costs_the_run_seconds_not_the_approval(
    silent: Silent,
    client: Client,
    task_queue: str,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HITL_WEBHOOK_URL", f"http://127.0.0.1:{silent.port}/hook")
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
    assert silent.connections, "the webhook was called"
    print(f"\nrun finished {finished:.2f} s after the decision, its webhook never answering")
    assert finished < DEADLINE + 2, finished


async def test_x_hitl_delivery_is_the_same_on_every_try_and_retry_of_one_event(
    receiver: Receiver,
) -> None:
    environ = {"HITL_WEBHOOK_URL": f"{receiver.base}/hook", "HITL_WEBHOOK_SECRET": SECRET}
    event = _event()
    receiver.fail_first = 2
    [first] = await deliver(event, environ)
    assert first.ok and first.attempts == 3, first
    [retried] = await deliver(event, environ)  # the activity retried: the same input
    later = _event("reminder", at=event.at + timedelta(minutes=15))
    [reminder] = await deliver(later, environ)
    assert retried.ok and reminder.ok
    hooks = receiver.on("/hook")
    ids = [headers["X-Hitl-Delivery"] for headers, _ in hooks]
    assert len(ids) == 5 and len(set(ids[:4])) == 1 and ids[4] != ids[0], ids
    for headers, body in hooks:
        assert verified(headers, body)["delivery_id"] == headers["X-Hitl-Delivery"]


async def test_email_shows_plain_text_while_a_markdown_channel_keeps_hostile_text_inert(
    receiver: Receiver,
) -> None:
    from apprise import NotifyFormat
    from apprise.conversion import convert_between

    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    urls = [
        f"mailto://127.0.0.1:{smtp.port}?from=hitl@example.com&to=ops@example.com&mode=insecure",
        f"json://127.0.0.1:{receiver.server.server_address[1]}/markdown",
        f"json://127.0.0.1:{receiver.server.server_address[1]}/text?format=text",
    ]
    hostile = f"delete {HOSTILE} *bold* <https://evil.example> &#x202e; &ZeroWidthSpace;"
    event = _event(summary=hostile, requested_by="ops_bot")
    try:
        deliveries = await deliver(event, {"HITL_APPRISE_URLS": ",".join(urls)})
    finally:
        smtp.stop()
    assert all(d.ok for d in deliveries), deliveries

    [raw] = mailbox.messages
    mail = email.message_from_bytes(raw)
    assert mail["Subject"] == "Approval needed: delete_files"
    body = mail.get_payload(decode=True).decode()
    assert "Requested by: ops_bot" in body and "*bold*" in body
    assert "\\_" not in body and "\\*" not in body, "no markdown escapes in an email"
    assert "\x1b" not in body and "\u202e" not in body and "\\u202e" in body

    [(_, text)] = receiver.on("/text")
    plain = json.loads(text)
    assert plain["title"] == "Approval needed: delete_files"
    assert "Requested by: ops_bot" in plain["message"]

    [(_, markdown)] = receiver.on("/markdown")
    marked = json.loads(markdown)
    assert marked["title"] == "Approval needed: delete\\_files"
    # What a service that renders markdown shows (Apprise's own renderer for HTML ones):
    # the text as written, no link, no hidden or reordered characters.
    html = convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, marked["message"])
    assert "<a " not in html and "<b>" not in html and "<img" not in html, html
    assert "[click](x.example)" in html and "Requested by: ops_bot" in html
    assert "&lt;https://evil.example&gt;" in html
    assert "&#x202e;" not in html.replace("&amp;#x202e;", "")
    assert "&ZeroWidthSpace;" not in html.replace("&amp;ZeroWidthSpace;", "")
    assert "\x1b" not in html and "\u202e" not in html


async def test_a_failing_channel_never_puts_its_url_in_the_record(tmp_path: Path) -> None:
    """A webhook or chat URL is often its own credential: when the receiver answers an
    error, or the URL can't be used, what is kept, logged and returned names no URL."""
    from hitl.activities.channels import deliver
    from hitl.secrets import secrets_in

    receiver = Receiver()
    receiver.fail_first = 10
    hook = f"{receiver.base}/services/T0/B0/SECRETHOOKTOKEN"
    chat = "zzz://bot:SECRETCHATPASSWORD@chat.example/room"
    environ = {"HITL_WEBHOOK_URL": hook, "HITL_APPRISE_URLS": f"json://127.0.0.1:1/x, {chat}"}
    deliveries = await deliver(_event("pending"), environ)
    text = json.dumps([d.__dict__ for d in deliveries])
    assert not any(d.ok for d in deliveries), text
    assert "HTTP 500" in text and "scheme 'zzz'" in text
    for secret in ("SECRETHOOKTOKEN", "SECRETCHATPASSWORD", hook, chat):
        assert secret not in text
    # And they are secrets the worker redacts wherever a value leaves it.
    found = {value for _, value in secrets_in(environ)}
    assert {hook, chat} <= found
