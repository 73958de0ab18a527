"""What the inbox asks of the review API: the pending listing filtered, sorted and paged
on the server (so thousands pending never all reach a browser), its parameters checked
with a sentence that says what is wrong, and the history of decided approvals.

Against the dev server and a real worker, as tests/test_api.py; each test's runs are
asked for by a requester of its own, so runs of other tests never enter its listings.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.models import PendingApproval
from hitl.reviews import PendingFilter, sort_key
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import start_run, turn, wait_pending
from tests.review_api import ServedApi, wait_listed, worker_env, write_reviewers

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
async def served(
    env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ServedApi, str]]:
    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    for name, value in worker_env(reviewers).items():
        monkeypatch.setenv(name, value)
    async with ServedApi(env.client, reviewers) as api:
        yield api, tokens["bob"]


@pytest.fixture
async def bob(served: tuple[ServedApi, str]) -> AsyncIterator[httpx.AsyncClient]:
    api, token = served
    async with api.http(token) as http:
        yield http


async def ids(http: httpx.AsyncClient, **params: Any) -> list[str]:
    answer = await http.get("/approvals", params=params)
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


async def three_runs(
    client: Client, task_queue: str, tmp_path: Path, requester: str
) -> dict[str, str]:
    """Three pending approvals: low risk expiring last, middle, and high risk expiring first."""
    started = {
        # delete one file: risk 34; write a new file: risk 35; delete three: risk 42
        "low": ([("delete_files", {"paths": [OLD_LOGS[0]]})], 900),
        "mid": ([("write_file", {"path": "notes/new.txt", "content": "hi"})], 600),
        "high": ([("delete_files", {"paths": OLD_LOGS})], 300),
    }
    found = {}
    for name, (calls, timeout) in started.items():
        handle = await start_run(
            client, task_queue, make_logs(tmp_path / name), script=[turn(*calls)],
            requested_by=requester, approval_timeout_seconds=timeout,
        )  # fmt: skip
        [record] = await wait_pending(handle)
        found[name] = record.id
        found[name + "_run"] = handle.id
    return found


async def test_the_listing_filters_sorts_and_pages_on_the_server(
    bob: httpx.AsyncClient, client: Client, task_queue: str, tmp_path: Path
) -> None:
    requester = f"req-{uuid.uuid4().hex[:8]}"
    runs = await three_runs(client, task_queue, tmp_path, requester)
    low, mid, high = runs["low"], runs["mid"], runs["high"]
    for name in ("low", "mid", "high"):
        await wait_listed(bob, runs[name + "_run"])
    mine = {"requester": requester}

    assert sorted(await ids(bob, **mine)) == sorted([low, mid, high])
    assert await ids(bob, **mine, sort="risk", order="desc") == [high, mid, low]
    assert await ids(bob, **mine, sort="risk") == [low, mid, high]
    assert await ids(bob, **mine, sort="expires_at") == [high, mid, low]
    assert await ids(bob, **mine, sort="expires_at", order="desc") == [low, mid, high]
    assert await ids(bob, **mine, risk_min=35, risk_max=40) == [mid]
    assert await ids(bob, **mine, risk_min=35, sort="risk") == [mid, high]
    assert await ids(bob, **mine, tool="write_file") == [mid]
    assert await ids(bob, **mine, expires_within="7m") == [high]
    assert await ids(bob, **mine, expires_within="720", sort="risk") == [mid, high]
    # The old parameters as before: a run's approvals, a tool's.
    assert await ids(bob, run=runs["low_run"]) == [low]
    assert await ids(bob, run=runs["low_run"], tool="write_file") == []
    assert await ids(bob, requester="nobody-asked") == []

    # Sorted pages follow one another by the last one shown, each approval once.
    seen, token, tokens = [], None, []
    for _ in range(5):
        params: dict[str, Any] = {**mine, "sort": "risk", "order": "desc", "limit": 1}
        if token:
            params["page_token"] = token
        body = (await bob.get("/approvals", params=params)).json()
        seen += [item["id"] for item in body["items"]]
        token = body["next_page_token"]
        tokens.append(token)
        if token is None:
            break
    assert seen == [high, mid, low]
    # A token belongs to its order.
    other = await bob.get(
        "/approvals", params={**mine, "sort": "expires_at", "page_token": tokens[0]}
    )
    assert other.status_code == 422
    assert "from the listing sorted by risk desc, not by expires_at asc" in other.json()["detail"]
    unsorted = await bob.get("/approvals", params={**mine, "page_token": tokens[0]})
    assert unsorted.status_code == 422 and "give the same sort=" in unsorted.json()["detail"]
    for name in ("low", "mid", "high"):
        await client.get_workflow_handle(runs[name + "_run"]).terminate("test done")


async def test_an_open_inbox_sorts_what_the_feed_holds_without_listing_every_run(
    served: tuple[ServedApi, str], client: Client, task_queue: str, tmp_path: Path
) -> None:
    """Sorting needs every pending approval; an inbox keeps /events open, so the feed's
    pending set (kept current by cheap polls) is sorted instead of listing every run per
    request (seconds at 10,000 pending)."""
    api, token = served
    state = api.app.state.hitl
    listings = 0
    listed = state.reviews.pending

    async def counted(*args: Any, **kwargs: Any) -> list[PendingApproval]:
        nonlocal listings
        listings += 1
        return await listed(*args, **kwargs)

    state.reviews.pending = counted
    requester = f"req-{uuid.uuid4().hex[:8]}"
    runs = await three_runs(client, task_queue, tmp_path, requester)
    low, mid, high = runs["low"], runs["mid"], runs["high"]
    mine = {"requester": requester}
    async with api.http(token) as bob:
        for name in ("low", "mid", "high"):
            await wait_listed(bob, runs[name + "_run"])
        assert await ids(bob, **mine, sort="risk", order="desc") == [high, mid, low]
        assert listings == 1, "without a subscriber, a sorted listing reads every run"
        subscriber = state.feed.subscribe()
        try:
            for _ in range(200):
                held = await state.feed.snapshot() or []
                if {low, mid, high} <= {item.id for item in held}:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the feed never held the three approvals")
            before = listings
            assert await ids(bob, **mine, sort="risk", order="desc") == [high, mid, low]
            assert await ids(bob, **mine, sort="expires_at") == [high, mid, low]
            assert await ids(bob, **mine, sort="risk", risk_min=35) == [mid, high]
            assert await ids(bob, **mine, sort="risk", tool="write_file") == [mid]
            assert await ids(bob, run=runs["low_run"], sort="risk") == [low]
            assert listings == before, "an open feed's pending set served every sorted page"
        finally:
            state.feed.unsubscribe(subscriber)
        # A reload comes back within seconds: the feed goes on a while without subscribers.
        assert await ids(bob, **mine, sort="risk", order="desc") == [high, mid, low]
        assert listings == before, "the lingering feed served the page after its reader left"
        # A decision through this API leaves the set it sorts at once, not a poll later.
        answer = await bob.post(f"/approvals/{low}/approve", json={})
        assert answer.status_code == 200, answer.text
        assert await ids(bob, **mine, sort="risk", order="desc") == [high, mid]
        assert listings == before
    for name in ("mid", "high"):  # low was approved and has ended
        await client.get_workflow_handle(runs[name + "_run"]).terminate("test done")


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"risk_min": -1}, "risk_min: Input should be greater than or equal to 0"),
        ({"risk_max": 101}, "risk_max: Input should be less than or equal to 100"),
        ({"risk_min": "high"}, "risk_min: Input should be a valid integer"),
        ({"risk_min": 80, "risk_max": 20}, "risk_min=80 is above risk_max=20"),
        ({"expires_within": "soon"}, "expires_within='soon' is not a duration"),
        ({"expires_within": "0s"}, "expires_within=0s is out of range"),
        ({"expires_within": "400d"}, "expires_within=400d is out of range"),
        ({"sort": "name"}, "sort: Input should be 'expires_at' or 'risk'"),
        ({"order": "desc"}, "order=desc needs sort= one of expires_at, risk"),
        ({"sort": "risk", "order": "up"}, "order: Input should be 'asc' or 'desc'"),
        ({"requester": "x" * 201}, "requester: String should have at most 200 characters"),
        (
            {"status": "approved", "run": "r", "risk_min": 3, "sort": "risk"},
            "risk_min, sort apply to pending approvals only; with status=approved give run=",
        ),
        ({"sort": "risk", "page_token": "bm90IGEgdG9rZW4"}, "page_token is not one this API"),
    ],
)
async def test_a_bad_listing_parameter_is_a_422_that_says_what_is_wrong(
    bob: httpx.AsyncClient, params: dict[str, Any], said: str
) -> None:
    answer = await bob.get("/approvals", params=params)
    assert answer.status_code == 422, answer.text
    assert said in answer.json()["detail"]


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"since": "yesterday"}, "since='yesterday' is neither a moment"),
        ({"since": "1d", "until": "2d"}, "until=2d is not after since=1d"),
        ({"since": "0001-01-01T00:00:00+05:00"}, "is out of range: a moment from 1970"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"page_token": "bm90IGEgdG9rZW4"}, "page_token is not one this API gave out"),
    ],
)
async def test_a_bad_history_parameter_is_a_422_that_says_what_is_wrong(
    bob: httpx.AsyncClient, params: dict[str, Any], said: str
) -> None:
    answer = await bob.get("/approvals/history", params=params)
    assert answer.status_code == 422, answer.text
    assert said in answer.json()["detail"]


async def test_the_history_says_who_decided_when_and_why_newest_first(
    bob: httpx.AsyncClient, client: Client, task_queue: str, tmp_path: Path
) -> None:
    # From now on: the runs of tests before (ended, their workers gone, so each is read
    # only after a query times out) are out of the range.
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    requester = f"req-{uuid.uuid4().hex[:8]}"
    runs = await three_runs(client, task_queue, tmp_path, requester)
    first = await bob.post(f"/approvals/{runs['low']}/approve", json={"comment": "old logs"})
    assert first.status_code == 200, first.text
    second = await bob.post(
        f"/approvals/{runs['high']}/reject", json={"reason": "<b>keep</b> them \u202eall"}
    )
    assert second.status_code == 200, second.text
    # A stale decision is refused with its code's title, for a list of outcomes.
    stale = await bob.post(
        f"/approvals/{runs['mid']}/approve", json={"action_digest": "sha256:" + "0" * 64}
    )
    assert stale.status_code == 409
    assert stale.json()["code"] == "stale_action"
    assert stale.json()["title"] == "the action changed"

    answer = await bob.get("/approvals/history", params={"since": since})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    ours = [item for item in body["items"] if item["id"] in (runs["low"], runs["high"])]
    assert [item["id"] for item in ours] == [runs["high"], runs["low"]]  # newest first
    rejected, approved = ours
    assert (rejected["outcome"], rejected["reviewer"]) == ("rejected", "bob")
    assert rejected["reason"] == "<b>keep</b> them \u202eall"
    assert (approved["outcome"], approved["reviewer"]) == ("approved", "bob")
    assert approved["reviewed_at"] <= rejected["reviewed_at"]
    assert runs["mid"] not in [item["id"] for item in body["items"]]  # still pending
    assert body["complete"] is True and body["problems"] == []

    # A page at a time, each once.
    seen, token = [], None
    for _ in range(50):
        params: dict[str, Any] = {"since": since, "limit": 1}
        if token:
            params["page_token"] = token
        page = (await bob.get("/approvals/history", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            break
    assert seen == [item["id"] for item in body["items"]]
    # A history token is not the pending listing's: a 422 at once, not handed to Temporal
    # (which answers a token it did not make with an internal error, retried for seconds).
    history_token = (
        await bob.get("/approvals/history", params={"since": since, "limit": 1})
    ).json()["next_page_token"]
    assert history_token
    for params in ({"page_token": history_token}, {"page_token": history_token, "sort": "risk"}):
        listed = await bob.get("/approvals", params=params)
        assert listed.status_code == 422, listed.text
        assert "page_token" in listed.json()["detail"]
    await client.get_workflow_handle(runs["mid_run"]).terminate("test done")


def test_filters_hold_at_their_bounds_and_sorting_breaks_ties_by_expiry_then_id() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def item(id: str, risk: int, minutes: float) -> PendingApproval:
        return PendingApproval(
            id=id, session_id="run", tool="t", summary="", risk=risk, created_at=now,
            expires_at=now + timedelta(minutes=minutes), requested_by="ann",
        )  # fmt: skip

    a, b, c, gone = item("a", 40, 10), item("b", 40, 5), item("c", 70, 30), item("d", 0, -1)
    within = PendingFilter(expires_within=timedelta(minutes=10))
    assert [x.id for x in (a, b, c, gone) if within.matches(x, now)] == ["a", "b", "d"]
    bounds = PendingFilter(risk_min=40, risk_max=40, requester="ann")
    assert [x.id for x in (a, b, c, gone) if bounds.matches(x, now)] == ["a", "b"]
    assert not PendingFilter(requester="bob").matches(a, now)

    def ordered(sort: str, descending: bool) -> list[str]:
        return [x.id for x in sorted((a, b, c, gone), key=lambda x: sort_key(x, sort, descending))]

    assert ordered("risk", False) == ["d", "b", "a", "c"]
    assert ordered("risk", True) == ["c", "b", "a", "d"]  # same risk: the sooner expiry first
    assert ordered("expires_at", False) == ["d", "b", "a", "c"]
    assert ordered("expires_at", True) == ["c", "a", "b", "d"]
