"""The API's plumbing without a Temporal server: the trusted-host check, the body bound,
the security headers, and the /events stream's wire format and its end.

The reviews library is replaced by a stub that lists a fixed set of pending approvals;
tests/test_api.py runs the same pieces against a real run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import MagicMock

import httpx
import pytest

from hitl.models import PendingApproval
from hitl.reviewers import load_config
from hitl.reviews import ListedRun
from tests.review_api import ServedApi

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Listing:
    """What visibility lists: the pending approvals, as the test sets them."""

    def __init__(self) -> None:
        self.items: list[PendingApproval] = []

    async def pending_runs(self, changed_since: datetime | None = None) -> AsyncIterator[ListedRun]:
        # One run that doesn't stamp its changes: the feed lists it whole every time.
        items = list(self.items)

        async def read() -> list[PendingApproval]:
            return items

        if items:
            stored = "".join(item.id for item in items).encode()
            yield ListedRun("run-1", "r-1", True, None, None, stored, read)


def pending(approval_id: str) -> PendingApproval:
    return PendingApproval(
        id=approval_id,
        session_id="run-1",
        tool="delete_files",
        summary="delete 1 file",
        risk=34,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=30),
    )


def insecure_app(host: str = "127.0.0.1") -> Any:
    from hitl.api import create_app

    return create_app(MagicMock(), load_config(environ={}), None, insecure=True, host=host)


async def call(app: Any, method: str, url: str, **options: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        return await http.request(method, url, **options)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost", "[::1]:8080"])
async def test_a_server_without_auth_answers_loopback_names(host: str) -> None:
    answer = await call(insecure_app(), "GET", "/inbox.css", headers={"Host": host})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.nip.io", "", "[::1"])
async def test_any_other_host_is_misdirected_and_said_as_a_problem(host: str) -> None:
    answer = await call(insecure_app(), "GET", "/healthz", headers={"Host": host})
    assert answer.status_code == 421, answer.text
    assert answer.json() == {
        "detail": "this server runs without authentication and answers only to "
        "127.0.0.1, ::1, localhost"
    }
    assert answer.headers["x-frame-options"] == "DENY"


async def test_the_host_it_was_started_on_is_answered_too() -> None:
    app = insecure_app("[fd00::7]")
    assert (
        await call(app, "GET", "/inbox.css", headers={"Host": "[fd00::7]:80"})
    ).status_code == 200
    everywhere = insecure_app("0.0.0.0")  # listening on every address: no name to hold to
    assert (
        await call(everywhere, "GET", "/inbox.css", headers={"Host": "x.example"})
    ).status_code == 200


async def test_a_body_over_the_bound_is_refused_before_the_route() -> None:
    answer = await call(
        insecure_app(), "POST", "/approvals/apr_1/approve", content=b"{" + b" " * 300_000 + b"}"
    )
    assert answer.status_code == 413
    assert answer.json() == {"detail": "a request body is at most 256 KiB"}
    assert "default-src 'none'" in answer.headers["content-security-policy"]


async def test_the_event_stream_speaks_as_the_inbox_reads_and_ends_with_its_reader() -> None:
    listing = Listing()
    async with ServedApi(MagicMock(), None, poll_seconds=0.05) as served:
        feed = served.app.state.hitl.feed
        feed.reviews = listing
        feed.linger = 0.05  # polling goes on this long after the last reader left
        lines: list[str] = []
        async with served.http() as http, http.stream("GET", "/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"

            async def read() -> None:
                async for line in response.aiter_lines():
                    lines.append(line)

            reader = asyncio.create_task(read())
            for _ in range(200):
                if "event: ready" in lines:
                    break
                await asyncio.sleep(0.01)
            listing.items = [pending("apr_1")]
            for _ in range(200):
                if "event: approval.pending" in lines:
                    break
                await asyncio.sleep(0.01)
            reader.cancel()
        # One comment first, `ready` with the reconnect delay, then numbered events.
        assert lines[:2] == [": hitl events", ""]
        assert lines[2] == "event: ready" and lines[3].startswith('data: {"at": ')
        assert lines[4:6] == ["retry: 2000", ""]
        at = lines.index("event: approval.pending")
        assert lines[at + 1].startswith('data: {"type":"approval.pending","id":"apr_1"')
        assert lines[at + 2 : at + 4] == ["id: 1", ""]
        # The reader left: its subscription ends, and `linger` after the last one the polling.
        for _ in range(200):
            if not feed._subscribers and feed._task is None:
                break
            await asyncio.sleep(0.01)
        assert not feed._subscribers and feed._task is None
