"""A Temporal client and worker on an event loop of their own, for synchronous tests.

Hypothesis drives its examples from plain functions; this runs the worker on a
background thread so each example can call into a real server and a real run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from worker import build_worker

T = TypeVar("T")


class Background:
    def __init__(self, address: str, task_queue: str) -> None:
        self.address = address
        self.task_queue = task_queue
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.client: Client
        self._worker: Worker
        self._running: asyncio.Future[None]

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> None:
        self.client = await Client.connect(self.address, data_converter=pydantic_data_converter)
        self._worker = build_worker(self.client, self.task_queue)
        self._running = asyncio.ensure_future(self._worker.run())

    async def _stop(self) -> None:
        await self._worker.shutdown()
        await self._running

    def __enter__(self) -> Background:
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
