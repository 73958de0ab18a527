"""The review API for tests: reviewers, their tokens, and the app under uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from hitl.api import create_app
from hitl.reviewers import SIGNING_KEY_ENV, add_reviewer, load_config, new_key, signer

API_KEY = new_key()
"""The API's signing key; the worker accepts it as `api:KEY` (HITL_DECISION_KEYS)."""


def write_reviewers(path: Path) -> dict[str, str]:
    """alice (up to risk 60), bob and dave (anything), carol (write_file only): their tokens."""
    return {
        "alice": add_reviewer(path, "alice", max_risk=60),
        "bob": add_reviewer(path, "bob"),
        "carol": add_reviewer(path, "carol", tools=["write_file"]),
        "dave": add_reviewer(path, "dave"),
    }


def worker_env(reviewers: Path) -> dict[str, str]:
    """What an operator sets on a worker that takes only the API's signed decisions."""
    return {"HITL_REVIEWERS": str(reviewers), "HITL_DECISION_KEYS": f"api:{API_KEY}"}


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process keeps its own signal handlers (pytest's Ctrl-C)


class ServedApi:
    """`create_app` under uvicorn, on this event loop, on a free loopback port."""

    def __init__(self, client: Client, reviewers: Path | None, **options: Any) -> None:
        config = load_config(reviewers) if reviewers else load_config(environ={})
        self.app: FastAPI = create_app(
            client,
            config,
            signer({SIGNING_KEY_ENV: API_KEY}),
            insecure=reviewers is None,
            **options,
        )
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = _Quiet(
            uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1)
        )
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServedApi:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        for _ in range(500):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.app.state.hitl.feed.close()
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


async def wait_listed(http: httpx.AsyncClient, run: str, count: int = 1) -> list[dict[str, Any]]:
    """The run's pending approvals once the listing shows `count` (visibility lags a little)."""
    for _ in range(400):
        answer = await http.get("/approvals", params={"run": run})
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        if len(items) >= count:
            return items
        await asyncio.sleep(0.025)
    raise AssertionError(f"run {run} never listed {count} pending approvals")
