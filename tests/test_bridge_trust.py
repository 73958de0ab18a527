"""The Redis bridge carries no reusable secret: decisions signed by their reviewer, once.

A real redis-server, the bridge in this process, and the worker of this test session with
the reviewers' keys in its environment (`HITL_DECISION_KEYS`), as an operator sets them.
Everything published on Redis can be read by any subscriber; these tests subscribe to
every channel and check that what they capture can't be used to decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from temporalio.client import Client

from hitl.bridge import (
    INVALID_REPLIES,
    MAX_MESSAGE_BYTES,
    UNKNOWN_REPLIES,
    RedisBridge,
    signed_message,
)
from hitl.cli import run as hitl
from hitl.decisions import form_of
from hitl.models import ApprovalStatus
from hitl.reviewers import add_reviewer, decode_key, load_config, new_key, sign
from tests.conftest import NEW_LOGS, OTHER, files_in, make_logs
from tests.helpers import approvals, start_run, wait_pending
from tests.redisserver import redis_server

pytestmark = pytest.mark.usefixtures("worker")

KEYS = {"alice": new_key(), "bob": new_key(), "api": new_key()}


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@dataclass
class Trust:
    redis_url: str
    reviewers: Path
    tokens: dict[str, str]
    bridge: RedisBridge

    @staticmethod
    def signer(name: str) -> tuple[str, bytes]:
        return name, decode_key(KEYS[name])


async def _start(bridge: RedisBridge) -> asyncio.Task[None]:
    ready = asyncio.Event()
    task = asyncio.create_task(bridge.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.fixture
async def trust(
    redis_url: str, client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Trust]:
    """alice and bob in the reviewers file, their own keys (and the API's) on the worker and
    the bridge, approvals announced on Redis, the bridge running."""
    reviewers = tmp_path / "reviewers.toml"
    tokens = {name: add_reviewer(reviewers, name) for name in ("alice", "bob")}
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    monkeypatch.setenv("HITL_DECISION_KEYS", ",".join(f"{n}:{k}" for n, k in KEYS.items()))
    monkeypatch.setenv("HITL_REDIS_URL", redis_url)
    bridge = RedisBridge(client, redis_url)
    task = await _start(bridge)
    yield Trust(redis_url, reviewers, tokens, bridge)
    await _stop(task)


async def _ask(
    redis_url: str, message: dict[str, Any] | str | bytes, channel: str | None = None
) -> dict[str, Any]:
    """Publish on hitl:decisions and wait for the reply on `channel` (default: the
    message's approval's own)."""
    if channel is None:
        assert isinstance(message, dict)
        channel = f"hitl:replies:{message['correlation_id']}"
    connection = redis.from_url(redis_url)
    pubsub = connection.pubsub()
    await pubsub.subscribe(channel)
    raw = json.dumps(message) if isinstance(message, dict) else message
    try:
        async with asyncio.timeout(20):
            while ((await pubsub.get_message(timeout=20)) or {}).get("type") != "subscribe":
                pass  # subscribed before publishing, so a quick reply is not missed
            await connection.publish("hitl:decisions", raw)
            async for reply in pubsub.listen():
                if reply["type"] == "message":
                    answer: dict[str, Any] = json.loads(reply["data"])
                    assert answer["channel"] == channel
                    return answer
    finally:
        await pubsub.aclose()
        await connection.aclose()
    raise AssertionError("no reply")


class Spy:
    """A subscriber to every channel (`PSUBSCRIBE *`), as anyone with Redis access is."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, redis_url: str) -> Spy:
        self.connection = redis.from_url(redis_url)
        self.pubsub = self.connection.pubsub()
        await self.pubsub.psubscribe("*")
        while (await self.pubsub.get_message(timeout=1)) is None:
            pass  # the subscription is confirmed: nothing published from here is missed
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "pmessage":
                self.seen.append((message["channel"].decode(), message["data"]))

    def on(self, channel: str) -> list[dict[str, Any]]:
        return [json.loads(data) for where, data in self.seen if where == channel]

    async def until(self, channel: str, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(20):
            while len(self.on(channel)) < count:
                await asyncio.sleep(0.02)
        return self.on(channel)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pubsub.aclose()
        await self.connection.aclose()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


async def test_a_subscriber_to_every_channel_captures_no_token_and_nothing_that_decides(
    trust: Trust, client: Client, task_queue: str, workspace: Path
) -> None:
    spy = await Spy().start(trust.redis_url)
    try:
        handle = await start_run(client, task_queue, workspace)
        [announced] = await spy.until("hitl:approvals")
        # What a reviewer's tool does: take the id and digest from the announcement, sign.
        message = signed_message(
            "approve",
            announced["correlation_id"],
            announced["action_digest"],
            comment="from chat",
            signer=trust.signer("alice"),
        )
        began = time.monotonic()
        reply = await _ask(trust.redis_url, message)
        result = await handle.result()
        resumed = time.monotonic() - began
        assert reply["outcome"] == "applied" and reply["reviewer"] == "alice", reply
        [record] = result.approvals
        assert record.reviewer == "alice" and record.status is ApprovalStatus.APPROVED
        # The worker saw alice's own signature, not one the bridge made.
        assert [entry.issuer for entry in record.decisions] == ["alice"]
        assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
        await spy.until(f"hitl:replies:{record.id}")
        print(f"\nsigned Redis decision published -> run completed: {resumed:.2f} s")
        assert resumed < 5

        captured = list(spy.seen)
        assert {"hitl:approvals", "hitl:decisions", f"hitl:replies:{record.id}"} <= {
            channel for channel, _ in captured
        }
        secrets = [*trust.tokens.values(), *KEYS.values()]
        config = load_config(trust.reviewers)
        for channel, raw in captured:
            assert not any(secret.encode() in raw for secret in secrets), channel
            strings = list(_strings(json.loads(raw)))
            assert "token" not in strings, channel
            assert not any(config.by_token(text) for text in strings), "a reviewer's token"

        # Everything captured, published again as a decision, decides nothing.
        for channel, raw in captured:
            answer = await _ask(trust.redis_url, raw, f"hitl:replies:{record.id}")
            assert answer["outcome"] == "refused", (channel, answer)
            if channel == "hitl:decisions":
                assert "replayed" in answer["refusal"]
        assert [entry.issuer for entry in (await approvals(handle))[0].decisions] == ["alice"]
    finally:
        await spy.stop()


async def test_a_replayed_signed_decision_is_refused_by_the_bridge_and_by_the_run(
    trust: Trust, client: Client, task_queue: str, tmp_path: Path
) -> None:
    with trust.reviewers.open("a") as file:  # two approvers, so the approval stays pending
        file.write("\n[[quorum]]\nmin_risk = 0\napprovals = 2\n")
    handle = await start_run(client, task_queue, make_logs(tmp_path / "ws"))
    [record] = await wait_pending(handle)
    assert record.quorum == 2
    alice = signed_message("approve", record.id, record.action_digest, signer=trust.signer("alice"))
    first = await _ask(trust.redis_url, alice)
    assert first["outcome"] == "applied", first
    replay = await _ask(trust.redis_url, alice)
    assert replay["outcome"] == "refused" and "replayed" in replay["refusal"], replay
    assert replay["code"] == "unauthenticated" and replay["entry"] is None, replay
    # A bridge restarted with nothing remembered forwards it; the run takes it for the copy
    # it is (the same signed payload), answers with the first one's entry and counts no vote.
    again = await RedisBridge(client, trust.redis_url).handle(json.dumps(alice))
    assert again["entry"] == first["entry"], again
    [still] = await wait_pending(handle)
    assert still.status is ApprovalStatus.PENDING and len(still.votes) == 1
    bob = signed_message("approve", record.id, record.action_digest, signer=trust.signer("bob"))
    assert (await _ask(trust.redis_url, bob))["outcome"] == "applied"
    result = await handle.result()
    assert result.approvals[0].status is ApprovalStatus.APPROVED


async def test_forged_crossed_expired_unbound_unsigned_and_token_messages_are_refused(
    trust: Trust, client: Client, task_queue: str, tmp_path: Path
) -> None:
    handle = await start_run(client, task_queue, make_logs(tmp_path / "ws"), requested_by="bob")
    [record] = await wait_pending(handle)
    digest = record.action_digest
    base = {"approval_id": record.id, "kind": "approve", "decision_id": "dec_1",
            "action_digest": digest, "comment": ""}  # fmt: skip

    def signed(fields: dict[str, Any], issuer: str, key: str, **when: Any) -> dict[str, Any]:
        return {"correlation_id": record.id, **sign(fields, issuer, decode_key(key), **when)}

    def fresh(name: str, **fields: Any) -> dict[str, Any]:
        decision = {**base, "reviewer": name, "decision_id": f"dec_{uuid.uuid4().hex}", **fields}
        return signed(decision, name, KEYS.get(name) or new_key())

    good = fresh("alice")
    unauthenticated, malformed = "unauthenticated", "malformed"
    cases = [
        (signed({**base, "reviewer": "bob"}, "alice", KEYS["alice"]),
         "alice's key signs only alice's own decisions", unauthenticated),
        ({**good, "signature": "0" * 64}, "forged or altered", unauthenticated),
        ({**good, "comment": "changed after signing"}, "forged or altered", unauthenticated),
        (signed({**base, "reviewer": "alice"}, "alice", new_key()), "forged or altered",
         unauthenticated),
        (signed({**base, "reviewer": "alice", "decision_id": "dec_old"}, "alice", KEYS["alice"],
                now=datetime.now(UTC) - timedelta(minutes=16)), "valid for 15 min",
         unauthenticated),
        (fresh("alice", action_digest=None), "names the action it decides", malformed),
        (fresh("alice", decision_id=None), "carries a decision_id", malformed),
        ({k: v for k, v in good.items() if k not in ("issuer", "signature", "issued_at")},
         "unsigned", unauthenticated),
        (signed({**base, "reviewer": "alice", "decision_id": "dec_api"}, "api", KEYS["api"]),
         "reviewer's own key, not 'api'", unauthenticated),
        ({**good, "token": trust.tokens["alice"]}, "tokens must never be sent over Redis",
         unauthenticated),
        (fresh("bob"), "bob started this run and may not approve", "not_allowed"),
        (fresh("mallory"), "not an issuer", unauthenticated),
        (fresh("alice", kind="reject"), "a rejection needs a reason", malformed),
        (fresh("alice", kind="explode"), "kind must be approve, reject or modify", malformed),
        (fresh("alice", kind="revoke"), "kind must be approve, reject or modify", malformed),
        (fresh("alice", comment="x" * 5000), "malformed approve", malformed),
    ]  # fmt: skip
    for message, expected, code in cases:
        reply = await _ask(trust.redis_url, message)
        assert reply["outcome"] == "refused" and expected in reply["refusal"], (expected, reply)
        # A script branches on the code; the title is worded from it, not from the sentence.
        assert reply["code"] == code and reply["title"] == form_of(code).title, (expected, reply)
    # Signed decisions the run refuses: forwarded, and answered with the run's own code.
    for message, expected, code in [
        (fresh("alice", action_digest="0" * 64), "but approval", "stale_action"),
        (fresh("alice", kind="modify", args={"paths": []}),
         "modified arguments are invalid for delete_files", "invalid_arguments"),
    ]:  # fmt: skip
        reply = await _ask(trust.redis_url, message)
        assert reply["outcome"] == "refused" and expected in reply["refusal"], reply
        assert reply["entry"]["refusal"] == reply["refusal"], reply
        assert reply["code"] == reply["entry"]["code"], "the run's code, passed on"
        assert reply["title"] == form_of(reply["code"]).title
        assert reply["code"] == code, reply
    [still] = await wait_pending(handle)
    assert still.status is ApprovalStatus.PENDING
    assert (await _ask(trust.redis_url, good))["outcome"] == "applied"
    assert (await handle.result()).approvals[0].reviewer == "alice"


def _printed(out: str) -> dict[str, Any]:
    """The reply `hitl bridge send` printed (the worker of this process logs there too)."""
    lines = out.splitlines()
    start = max(number for number, line in enumerate(lines) if line == "{")
    reply: dict[str, Any] = json.loads("\n".join(lines[start:]))
    return reply


async def test_a_reviewer_removed_while_the_bridge_runs_is_refused_on_the_next_message(
    trust: Trust,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = await start_run(client, task_queue, make_logs(tmp_path / "ws1"))
    second = await start_run(client, task_queue, make_logs(tmp_path / "ws2"))
    [one] = await wait_pending(first)
    [two] = await wait_pending(second)
    # bob decides from his own machine: `hitl bridge send`, his name and key, no token.
    monkeypatch.setenv("HITL_SIGNER", "bob")
    monkeypatch.setenv("HITL_SIGNING_KEY", KEYS["bob"])
    code = await hitl(
        ["bridge", "send", "approve", one.id, "--digest", one.action_digest, "--comment", "cli"]
    )
    sent = _printed(capsys.readouterr().out)
    assert code == 0 and sent["outcome"] == "applied" and sent["reviewer"] == "bob", sent
    assert (await first.result()).approvals[0].reviewer == "bob"
    # bob leaves: the file is rewritten while the bridge runs, his key still configured.
    text = trust.reviewers.read_text()
    kept = text[: text.index("[reviewers.bob]")]
    trust.reviewers.write_text(kept)
    assert "bob" not in load_config(trust.reviewers).reviewers
    code = await hitl(["bridge", "send", "approve", two.id, "--digest", two.action_digest])
    printed = capsys.readouterr()
    refused = _printed(printed.out)
    assert code == 1 and refused["outcome"] == "refused", refused
    assert refused["code"] == "not_allowed" and "hitl: refused (not allowed)" in printed.err
    # Refused by the bridge itself, before anything was sent to the run.
    assert refused["refusal"].startswith("forbidden: bob is not a reviewer"), refused
    assert refused["entry"] is None
    [still] = await wait_pending(second)
    assert still.status is ApprovalStatus.PENDING and still.decisions == []
    alice = signed_message("approve", two.id, two.action_digest, signer=trust.signer("alice"))
    assert (await _ask(trust.redis_url, alice))["outcome"] == "applied"
    await second.result()


async def test_replies_go_only_to_channels_a_well_formed_approval_id_names(
    trust: Trust,
) -> None:
    def message(correlation: Any) -> str:
        return json.dumps({"correlation_id": correlation, "kind": "approve"})

    for correlation in ["x*", "../", "a" * 300, "apr_1\nhitl:decisions", 12, ["apr_1"], {}]:
        reply = await _ask(trust.redis_url, message(correlation), INVALID_REPLIES)
        assert reply["outcome"] == "refused" and reply["correlation_id"] is None, reply
        assert "not an approval id" in reply["refusal"] and reply["code"] == "malformed"
    for raw in ["{not json", "[1, 2]", json.dumps({"kind": "approve"}), message(None)]:
        reply = await _ask(trust.redis_url, raw, UNKNOWN_REPLIES)
        assert reply["outcome"] == "refused" and reply["correlation_id"] is None, reply
        assert reply["code"] == "malformed" and reply["title"] == "unreadable decision", reply
    big = {"correlation_id": "apr_big1", "kind": "approve", "comment": "x" * 300_000}
    reply = await _ask(trust.redis_url, json.dumps(big), "hitl:replies:apr_big1")
    assert reply["correlation_id"] == "apr_big1" and reply["outcome"] == "refused"
    assert f"over {MAX_MESSAGE_BYTES:,} bytes" in reply["refusal"]
    hidden = {"comment": '"correlation_id": "apr_victim"' + "x" * 300_000, "kind": "approve"}
    assert (await _ask(trust.redis_url, json.dumps(hidden), UNKNOWN_REPLIES))["outcome"]
    bad = json.dumps({"correlation_id": "x*", "comment": "x" * 300_000})
    assert (await _ask(trust.redis_url, bad, INVALID_REPLIES))["outcome"] == "refused"
    nameless = json.dumps({"comment": "x" * 300_000})
    assert (await _ask(trust.redis_url, nameless, UNKNOWN_REPLIES))["outcome"] == "refused"
    # The bridge still answers a well-formed message after all of that.
    reply = await _ask(trust.redis_url, {"correlation_id": "apr_gone", "kind": "approve"})
    assert reply["channel"] == "hitl:replies:apr_gone" and reply["outcome"] == "refused"
    # Signed and well-formed, for an approval no run holds.
    gone = signed_message("approve", "apr_gone", "0" * 16, signer=trust.signer("alice"))
    reply = await _ask(trust.redis_url, gone)
    assert reply["outcome"] == "refused" and reply["code"] == "not_found", reply
    assert reply["title"] == "not found" and reply["decision_id"] == gone["decision_id"]


async def test_without_authentication_the_named_reviewer_is_believed_but_no_token_is_taken(
    redis_url: str,
    client: Client,
    task_queue: str,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)
    monkeypatch.delenv("HITL_DECISION_KEYS", raising=False)
    monkeypatch.delenv("HITL_SIGNING_KEY", raising=False)
    bridge = RedisBridge(client, redis_url, insecure_no_auth=True)
    task = await _start(bridge)
    try:
        handle = await start_run(client, task_queue, workspace)
        [record] = await wait_pending(handle)
        base = {"correlation_id": record.id, "kind": "approve", "reviewer": "dev"}
        token = await _ask(redis_url, {**base, "token": "anything"})
        assert "tokens must never be sent over Redis" in token["refusal"]
        reply = await _ask(redis_url, base)
        assert reply["outcome"] == "applied" and reply["reviewer"] == "dev", reply
        assert (await handle.result()).approvals[0].reviewer == "dev"
    finally:
        await _stop(task)


async def test_a_reply_that_names_no_decision_is_not_taken_as_yours(redis_url: str) -> None:
    """Anyone may publish on an approval's reply channel (or make the bridge answer there
    for a message of theirs): `send` takes only the reply naming its own decision."""
    from hitl.bridge import send

    message = {"correlation_id": "apr_0123456789abcdef", "decision_id": "dec_mine"}
    connection = redis.from_url(redis_url)

    async def forge() -> None:
        for _ in range(20):
            await asyncio.sleep(0.05)
            for forged in (None, "dec_other"):
                reply = {"decision_id": forged, "outcome": "refused", "refusal": "forged"}
                await connection.publish("hitl:replies:apr_0123456789abcdef", json.dumps(reply))

    forging = asyncio.create_task(forge())
    try:
        assert await send(redis_url, message, decisions="hitl:nobody-listens", wait=1.5) is None
    finally:
        await forging
        await connection.aclose()
