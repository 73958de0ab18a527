"""Attacks on the review API and the web inbox: each test is one attack.

The first ones are defects an adversarial pass found (all fixed); the others are attacks
that held, kept so they keep holding.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import BrowserContext, expect
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.reviewers import add_reviewer
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import start_run, turn, wait_pending
from tests.review_api import ServedApi, worker_env, write_reviewers
from tests.test_inbox import browser, row, sign_in  # noqa: F401 (the fixture)
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def reviewers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """alice (up to risk 60), bob, carol (write_file), dave; the worker takes signed decisions."""
    path = tmp_path / "reviewers.toml"
    tokens = write_reviewers(path)
    for name, value in worker_env(path).items():
        monkeypatch.setenv(name, value)
    return path, tokens


@pytest.fixture
async def api(
    env: WorkflowEnvironment, reviewers: tuple[Path, dict[str, str]]
) -> AsyncIterator[ServedApi]:
    async with ServedApi(env.client, reviewers[0]) as served:
        yield served


def deletes(*paths: str) -> list:
    return [turn(*[("delete_files", {"paths": [path]}) for path in paths])]


async def test_a_modification_can_not_raise_the_risk_past_the_reviewers_limit(
    api: ServedApi, reviewers: tuple[Path, dict[str, str]], client: Client, task_queue: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Creating notes.txt scores 35; overwriting the config file scores 75, above the 60
    # alice may approve: modifying the one into the other is approving the other.
    workspace = make_logs(tmp_path / "ws")
    handle = await start_run(
        client, task_queue, workspace,
        script=[turn(("write_file", {"path": "notes.txt", "content": "hi"}))],
    )  # fmt: skip
    [record] = await wait_pending(handle)
    assert record.risk == 35
    async with api.http(reviewers[1]["alice"]) as alice:
        answer = await alice.post(
            f"/approvals/{record.id}/modify",
            json={"args": {"path": "config/app.yaml", "content": "debug: true"}},
        )
    try:
        assert answer.status_code == 403, answer.text
        assert (workspace / "config/app.yaml").read_text() != "debug: true"
    finally:
        await handle.terminate("test done")


async def test_a_modification_into_a_riskier_action_needs_the_quorum_that_risk_needs(
    api: ServedApi, reviewers: tuple[Path, dict[str, str]], client: Client, task_queue: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # Two approvers from risk 60: creating notes.txt (35) needs one, overwriting the
    # config file (75) two. Bob's modification is one of them; dave's approval the second.
    quorum = tmp_path / "quorum.toml"
    quorum.write_text(reviewers[0].read_text() + "\n[[quorum]]\nmin_risk = 60\napprovals = 2\n")
    for name, value in worker_env(quorum).items():
        monkeypatch.setenv(name, value)
    workspace = make_logs(tmp_path / "ws")
    handle = await start_run(
        client, task_queue, workspace,
        script=[turn(("write_file", {"path": "notes.txt", "content": "hi"}))],
    )  # fmt: skip
    [record] = await wait_pending(handle)
    assert (record.risk, record.quorum) == (35, 1)
    url = f"/approvals/{record.id}"
    async with api.http(reviewers[1]["bob"]) as bob, api.http(reviewers[1]["dave"]) as dave:
        answer = await bob.post(
            f"{url}/modify", json={"args": {"path": "config/app.yaml", "content": "debug: true"}}
        )
        assert answer.status_code == 200, answer.text
        changed = answer.json()
        assert changed["entry"]["note"] == "1 of 2 approvals", changed
        assert changed["record"]["status"] == "pending"
        assert (changed["record"]["risk"], changed["record"]["quorum"]) == (75, 2)
        assert (workspace / "config/app.yaml").read_text() != "debug: true"
        answer = await dave.post(f"{url}/approve", json={})
        assert answer.status_code == 200, answer.text
    result = await handle.result()
    assert [v.reviewer for v in result.approvals[0].votes] == ["bob", "dave"]
    assert (workspace / "config/app.yaml").read_text() == "debug: true"


async def test_two_decisions_at_once_can_not_keep_the_run_from_ending(
    env: WorkflowEnvironment, reviewers: tuple[Path, dict[str, str]], client: Client,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Two reviewers decide while the worker is briefly away (a deploy, a restart): both
    # decisions reach the run together; one applies, the other is refused into the log.
    queue = f"tq-paused-{tmp_path.name}"
    async with build_worker(client, queue):
        handle = await start_run(
            client, queue, make_logs(tmp_path / "ws"), script=deletes(OLD_LOGS[0])
        )
        [record] = await wait_pending(handle)
    tokens = reviewers[1]
    url = f"/approvals/{record.id}"
    async with (
        ServedApi(client, reviewers[0], confirm_seconds=1) as served,
        served.http(tokens["alice"]) as alice,
        served.http(tokens["bob"]) as bob,
    ):
        sent = await asyncio.gather(
            alice.post(f"{url}/approve", json={}),
            bob.post(f"{url}/reject", json={"reason": "not now"}),
        )
        assert [answer.status_code for answer in sent] == [202, 202], [a.text for a in sent]
    async with build_worker(client, queue):
        try:
            result = await asyncio.wait_for(handle.result(), 20)
        except TimeoutError:
            await handle.terminate("test done: the run did not end")
            raise
    [approval] = result.approvals
    assert sorted(entry.outcome for entry in approval.decisions)[:2] == ["applied", "refused"]


async def test_an_events_stream_stops_when_its_token_is_replaced(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = tmp_path / "reviewers.toml"
    old = add_reviewer(path, "erin")
    monkeypatch.delenv("HITL_DECISION_KEYS", raising=False)
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)
    lines: list[str] = []
    async with ServedApi(client, path) as served, served.http(old) as erin:
        async with erin.stream("GET", "/events") as response:
            assert response.status_code == 200

            async def read() -> None:
                async for line in response.aiter_lines():
                    lines.append(line)

            reader = asyncio.create_task(read())
            for _ in range(400):
                if "event: ready" in lines:
                    break
                await asyncio.sleep(0.025)
            add_reviewer(path, "erin")  # a new token: the old one must stop working at once
            assert (await erin.get("/runs", params={"limit": 1})).status_code == 401
            handle = await start_run(
                client, task_queue, make_logs(tmp_path / "ws"), script=deletes(OLD_LOGS[0])
            )
            await wait_pending(handle)
            await asyncio.wait({reader}, timeout=3)  # the poller sees it within 0.5 s
            reader.cancel()
            await handle.terminate("test done")
    leaked = [line for line in lines if line.startswith("event: approval.")]
    assert leaked == [], "a replaced token still receives approvals"


async def test_the_inbox_approves_only_the_modification_the_reviewer_saw(
    browser: BrowserContext,  # noqa: F811
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    # The worker asks two approvers from risk 30 (a one-file delete scores 34).
    quorum = tmp_path / "quorum.toml"
    quorum.write_text(reviewers.read_text() + "\n[[quorum]]\nmin_risk = 30\napprovals = 2\n")
    for name, value in worker_env(quorum).items():
        monkeypatch.setenv(name, value)
    workspace = make_logs(tmp_path / "ws")
    handle = await start_run(client, task_queue, workspace, script=deletes(OLD_LOGS[0]))
    [record] = await wait_pending(handle)
    assert record.quorum == 2
    url = f"/approvals/{record.id}/modify"
    async with (
        ServedApi(client, reviewers) as served,
        served.http(tokens["dave"]) as dave,
        served.http(tokens["bob"]) as bob,
    ):
        first = await dave.post(url, json={"args": {"paths": [OLD_LOGS[1]]}})
        assert first.status_code == 200 and first.json()["record"]["status"] == "pending"

        page = await browser.new_page()
        await sign_in(page, served, tokens["alice"], f"#run={handle.id}")
        await row(page, record.id).click()
        await expect(page.locator("#d-modified")).to_contain_text(OLD_LOGS[1])

        # Bob modifies it again: alice's detail pane still shows dave's modification.
        second = await bob.post(url, json={"args": {"paths": [OLD_LOGS[2]]}})
        assert second.status_code == 200 and second.json()["record"]["status"] == "pending"
        await asyncio.sleep(1.5)  # a few /events polls
        await expect(page.locator("#d-modified")).to_contain_text(OLD_LOGS[1])

        await page.click("#d-approve")
        try:
            await expect(page.locator("#d-outcome")).to_contain_text(
                "refused (the action changed)", timeout=5000
            )
            assert (workspace / OLD_LOGS[2]).exists(), "a file alice never saw was deleted"
        finally:
            await handle.terminate("test done")


async def test_an_oversized_chunked_body_is_refused_as_too_large(
    api: ServedApi, reviewers: tuple[Path, dict[str, str]]
) -> None:
    async def chunks(count: int, last: bytes = b"") -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b" " * 10_000
        yield last

    async with api.http(reviewers[1]["bob"]) as http:
        answer = await http.post(
            "/approvals/apr_0000000000000000/approve",
            content=chunks(40),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413, answer.text
        # Under the bound, a chunked body is read whole: the id is what is wrong.
        answer = await http.post(
            "/approvals/apr_0000000000000000/approve",
            content=chunks(20, b"{}"),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 404, answer.text


# --- attacks that held ---------------------------------------------------------------------

SIMPLE_CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain; charset=application/json",
]


async def test_cross_site_requests_can_not_decide_on_a_server_without_auth(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A page on another origin can send a "simple" POST to 127.0.0.1 with no preflight:
    no Content-Type, or text/plain, form or multipart. None of them is read as JSON; a
    JSON body needs a preflight the API never answers with CORS headers."""
    monkeypatch.delenv("HITL_DECISION_KEYS", raising=False)
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)
    handle = await start_run(
        client, task_queue, make_logs(tmp_path / "ws"), script=deletes(OLD_LOGS[0])
    )
    [record] = await wait_pending(handle)
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    async with ServedApi(client, None) as served, httpx.AsyncClient(base_url=served.url) as http:
        for kind in SIMPLE_CONTENT_TYPES:
            headers = cross_site | ({"Content-Type": kind} if kind else {})
            answer = await http.post(
                f"/approvals/{record.id}/approve",
                content=b'{"reviewer": "mallory"}',
                headers=headers,
            )
            # Not a JSON request: refused before anything is decided.
            assert answer.status_code == 400, (kind, answer.text)
        preflight = await http.options(
            f"/approvals/{record.id}/approve",
            headers=cross_site | {"Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        rebound = await http.post(
            f"/approvals/{record.id}/approve", json={}, headers={"Host": "127.0.0.1.nip.io"}
        )
        assert rebound.status_code == 421
    [still] = await wait_pending(handle)
    assert still.decisions == []
    await handle.terminate("test done")


async def test_identity_comes_only_from_the_authorization_header(
    api: ServedApi, reviewers: tuple[Path, dict[str, str]]
) -> None:
    token = reviewers[1]["bob"]
    async with httpx.AsyncClient(base_url=api.url) as http:
        refused = [
            {"Authorization": f"Basic {token}"},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": "Bearer " + "x" * 60_000},
            {"Cookie": f"token={token}; hitl.token={token}"},
        ]
        for headers in refused:
            assert (await http.get("/runs", headers=headers)).status_code == 401
        in_url = {"token": token, "access_token": token, "authorization": f"Bearer {token}"}
        assert (await http.get("/runs", params=in_url)).status_code == 401
        assert (await http.get("/events", params=in_url)).status_code == 401
        lower = await http.get(
            "/runs", params={"limit": 1}, headers={"Authorization": f"bearer {token}"}
        )
        assert lower.status_code == 200
        # Two headers: the first is the one read, so a forged first one can't ride on a real one.
        two = [("Authorization", "Bearer forged"), ("Authorization", f"Bearer {token}")]
        assert (await http.get("/runs", headers=two)).status_code == 401
