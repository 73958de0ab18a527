"""Slack, two-way: approvals posted as interactive messages, clicks decided as reviewers.

Real components: the official Slack SDK (slack_sdk) against a local server speaking the
Web API methods used (chat.postMessage, chat.update, chat.postEphemeral, views.open,
conversations.history), the review API under uvicorn, the worker of this test session,
and interactions signed exactly as Slack signs them (`v0:timestamp:body`, HMAC-SHA256
with the signing secret; a form body `payload=<json>`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from temporalio.client import Client

from hitl.activities.channels import deliver
from hitl.chat import ButtonValue
from hitl.chat import slack as chat
from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    NotifyEvent,
    ToolAction,
    ToolPreview,
    Vote,
)
from hitl.reviewers import decode_key, load_config
from hitl.reviews import Reviews
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import approvals, start_run, turn, wait_decisions, wait_pending
from tests.review_api import API_KEY, ServedApi, worker_env, write_reviewers

pytestmark = pytest.mark.usefixtures("worker")

SECRET = "slack-signing-secret-for-tests"
TOKEN = "xoxb-test-token-never-shown"
CHANNEL = "C0APPROVALS"
HOSTILE = "<!channel> <https://evil.example|click> *bold* _it_ ~s~ `code` & :skull:"


class FakeSlack:
    """The Slack Web API methods hitl uses, recording every call; messages kept per channel
    (with their metadata) so conversations.history finds them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, args: dict[str, Any]) -> None:
                method = urlparse(self.path).path.rsplit("/", 1)[-1]
                with fake.lock:
                    fake.calls.append((method, args, dict(self.headers.items())))
                    answer = fake.answer(method, args)
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                self._answer({k: v[0] for k, v in query.items()})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if "json" in self.headers.get("Content-Type", ""):
                    args = json.loads(raw or b"{}")
                else:
                    args = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                self._answer(args)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "chat.postMessage":
            kept = self.messages.setdefault(args["channel"], [])
            ts = f"{time.time():.6f}"
            kept.append({"ts": ts, "blocks": args.get("blocks"), "metadata": args.get("metadata")})
            return {"ok": True, "channel": args["channel"], "ts": ts}
        if method == "chat.update":
            for message in self.messages.get(args["channel"], []):
                if message["ts"] == args["ts"]:
                    message["blocks"] = args.get("blocks")
                    return {"ok": True, "channel": args["channel"], "ts": args["ts"]}
            return {"ok": False, "error": "message_not_found"}
        if method == "conversations.history":
            oldest = float(args.get("oldest") or 0)
            found = [m for m in self.messages.get(args["channel"], []) if float(m["ts"]) >= oldest]
            return {"ok": True, "messages": list(reversed(found)), "has_more": False}
        if method in ("chat.postEphemeral", "views.open"):
            return {"ok": True, "message_ts": "1.0"}
        return {"ok": False, "error": "unknown_method"}

    def of(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [args for name, args, _ in self.calls if name == method]

    def posted_for(self, approval_id: str) -> dict[str, Any] | None:
        with self.lock:
            for message in self.messages.get(CHANNEL, []):
                if (message.get("metadata") or {}).get("event_payload", {}).get(
                    "approval_id"
                ) == approval_id:
                    return message
        return None


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    yield fake
    fake.server.shutdown()


@pytest.fixture(scope="module")
def reviewers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bob and dave (anything), carol (write_file only) mapped to Slack users; alice not."""
    path = tmp_path_factory.mktemp("reviewers") / "reviewers.toml"
    write_reviewers(path)
    text = path.read_text()
    for name, user in (("bob", "UBOB"), ("carol", "UCAROL"), ("dave", "UDAVE")):
        text = text.replace(f"[reviewers.{name}]\n", f'[reviewers.{name}]\nslack_user = "{user}"\n')
    path.write_text(text)
    assert load_config(path).by_slack_user("UBOB").name == "bob"  # type: ignore[union-attr]
    return path


@pytest.fixture(autouse=True)
def slack_env(monkeypatch: pytest.MonkeyPatch, reviewers: Path, slack: FakeSlack) -> None:
    for name, value in {
        **worker_env(reviewers),
        chat.TOKEN_ENV: TOKEN,
        chat.CHANNEL_ENV: CHANNEL,
        chat.API_URL_ENV: slack.url,
        chat.SIGNING_SECRET_ENV: SECRET,
        "HITL_INBOX_URL": "http://inbox.example/",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def api(client: Client, reviewers: Path, slack_env: None) -> AsyncIterator[ServedApi]:
    async with ServedApi(client, reviewers) as served:
        yield served


def signed(body: str, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    """The headers Slack sends: `v0=` HMAC-SHA256 of `v0:timestamp:body`."""
    stamp = str(int(time.time()) if at is None else at)
    mac = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={mac.hexdigest()}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


_trigger = iter(range(10**9))


def click(user: str, action_id: str, value: str, ts: str = "1.0") -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "trigger_id": f"trigger.{next(_trigger)}",
        "channel": {"id": CHANNEL},
        "container": {"type": "message", "channel_id": CHANNEL, "message_ts": ts},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [{"action_id": action_id, "value": value, "type": "button"}],
    }
    return urlencode({"payload": json.dumps(payload)})


async def post(api: ServedApi, body: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.url) as http:
        return await http.post("/slack/interactions", content=body, headers=headers)


async def until(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def buttons(blocks: list[dict[str, Any]]) -> dict[str, str]:
    return {
        element["action_id"]: element.get("value", "")
        for block in blocks
        if block["type"] == "actions"
        for element in block["elements"]
    }


async def pending_message(
    client: Client, task_queue: str, tmp_path: Path, slack: FakeSlack, name: str
) -> tuple[Any, ApprovalRecord, dict[str, Any]]:
    handle = await start_run(
        client,
        task_queue,
        make_logs(tmp_path / name),
        script=[turn(("delete_files", {"paths": [OLD_LOGS[0]]}))],
    )
    (record,) = await wait_pending(handle)
    message = await until(lambda: slack.posted_for(record.id), "the approval's Slack post")
    return handle, record, message


# --- the message ----------------------------------------------------------------------------------


def _event(kind: str = "pending") -> NotifyEvent:
    now = datetime.now(UTC)
    action = ToolAction(tool="delete_files", args={"paths": [HOSTILE]})
    record = ApprovalRecord(
        id="apr_hostile",
        session_id="run-hostile",
        action_json=action,
        action_digest=action.digest(),
        created_at=now,
        expires_at=now + timedelta(minutes=30),
        context=ApprovalContext(
            original_request=f"clean up {HOSTILE}", reasoning=HOSTILE, requested_by=HOSTILE
        ),
        preview=ToolPreview(summary=f"delete {HOSTILE}", details=f"{HOSTILE}\n" * 400),
    )
    return NotifyEvent(event=kind, approval=record, at=now)


async def test_hostile_model_text_is_escaped_in_the_posted_blocks(slack: FakeSlack) -> None:
    event = _event()
    (delivery,) = await deliver(event)
    assert delivery.ok and delivery.message is not None, delivery
    ours = [
        a
        for a in slack.of("chat.postMessage")
        if a["metadata"]["event_payload"]["approval_id"] == "apr_hostile"
    ]
    posted = ours[0]
    text = json.dumps(posted["blocks"], ensure_ascii=False)
    # No mention, link or entity can form: every < > & of the model's text is an entity.
    for raw in ("<!channel>", "<https://evil.example|click>", "& :skull:"):
        assert raw not in text
    assert "&lt;!channel&gt;" in text and "&lt;https://evil.example|click&gt;" in text
    assert "&amp; :skull:" in text
    # Formatting is inert: untrusted text is shown as code, its backticks can't close it.
    assert "`code`" not in text and "\u02cbcode\u02cb" in text
    for block in posted["blocks"]:
        if block["type"] == "section":
            assert block["text"]["verbatim"] is True
            assert len(block["text"]["text"]) <= chat.SECTION_CHARS
    assert "The whole preview in the inbox" in text  # clipped, with a link for the rest
    assert set(buttons(posted["blocks"])) == {chat.APPROVE, chat.REJECT, chat.MODIFY, chat.OPEN}
    value = ButtonValue.decode(buttons(posted["blocks"])[chat.APPROVE])
    assert value == ButtonValue("apr_hostile", event.approval.action_digest, "run-hostile")
    assert posted["text"].startswith("Approval needed") and "<" not in posted["text"]
    # The token goes in the Authorization header only, never in what is posted.
    assert TOKEN not in json.dumps([args for _, args, _ in slack.calls])

    # A retry of the same event updates that message instead of posting another.
    again = await deliver(event)
    assert again[0].message == delivery.message
    assert (
        len(
            [
                a
                for a in slack.of("chat.postMessage")
                if a["metadata"]["event_payload"]["approval_id"] == "apr_hostile"
            ]
        )
        == len(ours)
        == 1
    )

    # The outcome replaces the buttons.
    settled = event.approval.model_copy(
        update={"status": ApprovalStatus.APPROVED, "reviewer": "bob", "reviewed_at": event.at}
    )
    (done,) = await deliver(NotifyEvent(event="decided", approval=settled, at=event.at))
    assert done.ok
    updated = slack.posted_for("apr_hostile") or {}
    assert set(buttons(updated["blocks"])) == {chat.OPEN}
    assert "approved by bob" in json.dumps(updated["blocks"])


# --- the interaction endpoint ---------------------------------------------------------------------


async def test_a_click_to_approve_decides_as_the_mapped_reviewer_and_updates_the_message(
    api: ServedApi, client: Client, task_queue: str, tmp_path: Path, slack: FakeSlack
) -> None:
    handle, record, message = await pending_message(client, task_queue, tmp_path, slack, "a")
    value = buttons(message["blocks"])[chat.APPROVE]
    body = click("UBOB", chat.APPROVE, value, ts=message["ts"])
    answer = await post(api, body, signed(body))
    assert answer.status_code == 200, answer.text

    async def approved() -> ApprovalRecord:
        for _ in range(400):
            now = next(r for r in await approvals(handle) if r.id == record.id)
            if now.status.value != "pending":
                return now
            await asyncio.sleep(0.05)
        raise AssertionError("not decided")

    decided = await approved()
    assert decided.status.value == "approved" and decided.reviewer == "bob"
    entry = decided.decisions[-1]
    assert entry.outcome == "applied" and entry.reviewer == "bob"
    await until(
        lambda: set(buttons((slack.posted_for(record.id) or {})["blocks"])) == {chat.OPEN},
        "the message updated without its buttons",
    )
    assert "approved by bob" in json.dumps(slack.posted_for(record.id))


async def test_forged_stale_and_replayed_requests_are_refused(
    api: ServedApi, slack: FakeSlack
) -> None:
    value = ButtonValue("apr_none", "0" * 64, "run").encode()
    body = click("UBOB", chat.OPEN, value)
    forged = await post(api, body, signed(body, secret="not-the-secret"))
    assert forged.status_code == 401 and "signature" in forged.json()["detail"]
    altered = signed(body)
    tampered = await post(api, body.replace("UBOB", "UDAVE"), altered)
    assert tampered.status_code == 401
    stale = await post(api, body, signed(body, at=int(time.time()) - 301))
    assert stale.status_code == 401 and "5 minutes" in stale.json()["detail"]
    unsigned = await post(api, body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    first_body = click("UBOB", chat.OPEN, value)
    fresh = signed(first_body)
    assert (await post(api, first_body, fresh)).status_code == 200
    replay = await post(api, first_body, fresh)
    assert replay.status_code == 401 and "replay" in replay.json()["detail"]


async def test_unmapped_unauthorized_and_outdated_clicks_decide_nothing_and_say_why(
    api: ServedApi, client: Client, task_queue: str, tmp_path: Path, slack: FakeSlack
) -> None:
    handle, record, message = await pending_message(client, task_queue, tmp_path, slack, "b")
    value = buttons(message["blocks"])[chat.APPROVE]

    def told(user: str, *words: str) -> Any:
        return lambda: next(
            (
                m
                for m in slack.of("chat.postEphemeral")
                if m["user"] == user and all(w in m["text"] for w in words)
            ),
            None,
        )

    body = click("UNOBODY", chat.APPROVE, value, ts=message["ts"])
    assert (await post(api, body, signed(body))).status_code == 200
    await until(told("UNOBODY", "not mapped to a reviewer"), "the unmapped user told why")

    # carol may decide write_file calls only (the reviewers file's rules).
    body = click("UCAROL", chat.APPROVE, value, ts=message["ts"])
    assert (await post(api, body, signed(body))).status_code == 200
    await until(told("UCAROL", "may not decide delete_files"), "carol told why")

    # A button showing another action than the approval's now: refused by the run.
    outdated = ButtonValue(record.id, "f" * 64, record.session_id).encode()
    body = click("UBOB", chat.APPROVE, outdated, ts=message["ts"])
    assert (await post(api, body, signed(body))).status_code == 200
    await until(told("UBOB", "stale_action"), "bob told the action changed")
    (entry,) = await wait_decisions(handle, record.id, 1)
    assert entry.outcome == "refused" and entry.code == "stale_action"

    now = next(r for r in await approvals(handle) if r.id == record.id)
    assert now.status.value == "pending" and now.reviewer is None
    assert [d.reviewer for d in now.decisions] == ["bob"]  # neither stranger reached the run

    # Reject opens a modal for the reason; its submission rejects with that reason.
    body = click("UDAVE", chat.REJECT, value, ts=message["ts"])
    assert (await post(api, body, signed(body))).status_code == 200
    opened = await until(lambda: slack.of("views.open"), "the reject modal")
    view = opened[-1]["view"]
    assert view["callback_id"] == chat.REJECT_VIEW

    def submission(reason: str) -> str:
        payload = {
            "type": "view_submission",
            "user": {"id": "UDAVE"},
            "view": {
                "callback_id": view["callback_id"],
                "private_metadata": view["private_metadata"],
                "state": {"values": {"reason": {"reason": {"value": reason}}}},
            },
        }
        return urlencode({"payload": json.dumps(payload)})

    empty = submission("  ")
    answer = await post(api, empty, signed(empty))
    assert answer.json()["response_action"] == "errors" and "reason" in answer.json()["errors"]
    good = submission("keep these logs until the audit")
    answer = await post(api, good, signed(good))
    assert answer.status_code == 200
    for _ in range(400):
        now = next(r for r in await approvals(handle) if r.id == record.id)
        if now.status.value != "pending":
            break
        await asyncio.sleep(0.05)
    assert now.status.value == "rejected" and now.reviewer == "dave"
    assert now.reason == "keep these logs until the audit"
    await until(
        lambda: set(buttons((slack.posted_for(record.id) or {})["blocks"])) == {chat.OPEN},
        "the message updated without its buttons",
    )


async def test_modify_checks_the_arguments_in_the_modal_then_runs_with_them(
    api: ServedApi, client: Client, task_queue: str, tmp_path: Path, slack: FakeSlack
) -> None:
    handle, record, message = await pending_message(client, task_queue, tmp_path, slack, "m")
    body = click("UDAVE", chat.MODIFY, buttons(message["blocks"])[chat.MODIFY], message["ts"])
    assert (await post(api, body, signed(body))).status_code == 200
    view = (
        await until(
            lambda: [
                v["view"]
                for v in slack.of("views.open")
                if v["view"]["callback_id"] == chat.MODIFY_VIEW
                and record.id in v["view"]["private_metadata"]
            ],
            "the modify modal",
        )
    )[-1]
    shown = next(b for b in view["blocks"] if b.get("block_id") == "args")
    assert json.loads(shown["element"]["initial_value"]) == record.action_json.args

    async def submit(text: str) -> httpx.Response:
        payload = {
            "type": "view_submission",
            "user": {"id": "UDAVE"},
            "view": {
                "callback_id": chat.MODIFY_VIEW,
                "private_metadata": view["private_metadata"],
                "state": {"values": {"args": {"args": {"value": text}}}},
            },
        }
        form = urlencode({"payload": json.dumps(payload)})
        return await post(api, form, signed(form))

    for wrong in ("{not json", "[1]", json.dumps({"paths": "logs"})):
        answer = (await submit(wrong)).json()
        assert answer["response_action"] == "errors" and answer["errors"]["args"], answer
    assert (await approvals(handle))[0].decisions == []  # nothing was sent

    assert (await submit(json.dumps({"paths": [OLD_LOGS[1]]}))).status_code == 200
    for _ in range(400):
        now = next(r for r in await approvals(handle) if r.id == record.id)
        if now.status.value != "pending":
            break
        await asyncio.sleep(0.05)
    assert now.status.value == "modified" and now.reviewer == "dave"
    assert now.effective_action.args == {"paths": [OLD_LOGS[1]]}


async def test_slack_down_costs_the_notification_its_bound_and_never_the_approval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hitl.activities.channels import DEADLINE
    from hitl.devserver import free_port

    monkeypatch.setenv(chat.API_URL_ENV, f"http://127.0.0.1:{free_port()}/api/")
    started = time.monotonic()
    (delivery,) = await deliver(_event())
    assert not delivery.ok and delivery.error and TOKEN not in delivery.error
    assert time.monotonic() - started < DEADLINE + 1


def test_channels_per_tool_and_risk_and_one_slack_user_per_reviewer(tmp_path: Path) -> None:
    config = chat.settings(
        {
            chat.TOKEN_ENV: TOKEN,
            chat.CHANNEL_ENV: "CDEFAULT",
            chat.CHANNELS_ENV: "risk>=80=CRISKY, tool=run_command=COPS",
        }
    )
    assert config is not None and TOKEN not in repr(config)
    assert config.channel_for("run_command", 10) == "COPS"
    assert config.channel_for("run_command", 90) == "COPS"  # the tool's own rule first
    assert config.channel_for("delete_files", 90) == "CRISKY"
    assert config.channel_for("delete_files", 10) == "CDEFAULT"
    assert chat.settings({}) is None
    with pytest.raises(ValueError, match="HITL_SLACK_CHANNELS"):
        chat.settings({chat.TOKEN_ENV: TOKEN, chat.CHANNELS_ENV: "nonsense"})

    path = tmp_path / "reviewers.toml"
    write_reviewers(path)
    text = path.read_text()
    for name in ("bob", "dave"):
        text = text.replace(f"[reviewers.{name}]\n", f'[reviewers.{name}]\nslack_user = "USAME"\n')
    path.write_text(text)
    with pytest.raises(ValueError, match="same slack_user"):
        load_config(path)
    path.write_text(text.replace('"USAME"', '"<@U1>"', 1))
    with pytest.raises(ValueError, match="member id"):
        load_config(path)


async def test_a_vote_from_another_path_updates_the_message_in_place(
    client: Client,
    task_queue: str,
    tmp_path: Path,
    slack: FakeSlack,
    reviewers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A quorum's vote cast outside Slack (here the reviews library, as the CLI and the API
    send it) shows in the posted message at once, not only at the next outcome."""
    quorum = tmp_path / "reviewers.toml"
    quorum.write_text(reviewers.read_text() + "\n[[quorum]]\nmin_risk = 0\napprovals = 2\n")
    monkeypatch.setenv("HITL_REVIEWERS", str(quorum))  # the in-process worker reads it
    handle, record, message = await pending_message(client, task_queue, tmp_path, slack, "v")
    assert record.quorum == 2 and "approvals 0 of 2" in json.dumps(message["blocks"])
    reviews = Reviews(client, signer=("api", decode_key(API_KEY)))
    voted = await reviews.decide(
        ApproveDecision(approval_id=record.id, reviewer="dave"), workflow_id=handle.id
    )
    assert voted.applied, voted
    await until(
        lambda: "approvals 1 of 2: `dave`" in json.dumps(slack.posted_for(record.id) or {}),
        "the message showing dave's vote",
    )
    assert chat.APPROVE in buttons((slack.posted_for(record.id) or {})["blocks"])
    await handle.terminate("test done")


async def test_votes_and_a_timeout_show_in_the_message(slack: FakeSlack) -> None:
    event = _event()
    record = event.approval.model_copy(
        update={
            "id": "apr_votes",
            "quorum": 2,
            "votes": [
                Vote(reviewer="bob", at=event.at, action_digest=event.approval.action_digest)
            ],
        }
    )
    (posted,) = await deliver(NotifyEvent(event="pending", approval=record, at=event.at))
    assert posted.ok
    shown = json.dumps((slack.posted_for("apr_votes") or {})["blocks"])
    assert "approvals 1 of 2: `bob`" in shown
    expired = record.model_copy(
        update={
            "status": ApprovalStatus.REJECTED,
            "reviewer": "system:timeout",
            "reason": "no decision came within 30 min; auto-rejected",
        }
    )
    (done,) = await deliver(NotifyEvent(event="timed_out", approval=expired, at=event.at))
    assert done.ok and done.message == posted.message
    updated = slack.posted_for("apr_votes") or {}
    assert set(buttons(updated["blocks"])) == {chat.OPEN}
    assert updated["blocks"][0]["text"]["text"] == "Approval expired"
