"""Faults injected into real processes: workers killed with SIGKILL, the server restarted.

After every fault the run completes, every approved action happened exactly once, and
nothing unapproved happened.
"""

from __future__ import annotations

import asyncio
import email
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.config import connect, load_settings
from hitl.devserver import DevServer, free_port
from hitl.models import ApprovalStatus, ModelSettings, RunResult, RunState
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.fake_openai import HANG, FakeOpenAI, completion
from tests.helpers import decision, start_run, turn, wait_pending
from tests.processes import WorkerProcess
from tests.soak import SCALE

KILLS = 3 * SCALE


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def fake_host() -> str:
    """What a worker must allow for the fake model servers: loopback, any port."""
    return "http://127.0.0.1"


class Relay:
    """Worker processes replacing each other on one task queue, each SIGKILLed in turn."""

    def __init__(self, address: str, task_queue: str, **env: str) -> None:
        self.address, self.task_queue, self.env = address, task_queue, env
        self.current: WorkerProcess | None = None
        self.kills = 0

    async def start(self) -> None:
        self.current = await WorkerProcess(self.address, self.task_queue, **self.env).start()

    async def kill_and_replace(self) -> None:
        assert self.current is not None
        await self.current.kill()
        self.kills += 1
        await self.start()

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop()


async def test_killing_the_worker_while_an_approval_waits_loses_nothing(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    runs = 3
    relay = Relay(_address(env), f"tq-kill-pending-{uuid.uuid4().hex[:6]}")
    workspaces = [make_logs(tmp_path / f"ws{i}") for i in range(runs)]
    await relay.start()
    try:
        handles = [await start_run(client, relay.task_queue, ws) for ws in workspaces]
        records = [(await wait_pending(handle))[0] for handle in handles]
        for _ in range(KILLS):
            await relay.kill_and_replace()
        assert all(files_in(ws) == sorted(OLD_LOGS + NEW_LOGS + OTHER) for ws in workspaces)
        for handle, record in zip(handles, records, strict=True):
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-kill"))
        results = await asyncio.wait_for(
            asyncio.gather(*(handle.result() for handle in handles)), timeout=60
        )
    finally:
        await relay.stop()
    for workspace, result in zip(workspaces, results, strict=True):
        [done] = result.approvals
        assert done.status is ApprovalStatus.APPROVED and done.reviewer == "after-kill"
        assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
        assert result.state is RunState.COMPLETED


async def _client(address: str) -> Client:
    settings = load_settings({"TEMPORAL_ADDRESS": address, "TEMPORAL_CONFIG_FILE": "/none"})
    for _ in range(150):
        try:
            return await connect(settings)
        except RuntimeError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"no Temporal server answered at {address}")


async def test_a_server_down_across_the_deadline_still_times_the_approval_out(
    tmp_path: Path,
) -> None:
    server = DevServer(tmp_path / "state" / "temporal.db", port=free_port(), headless=True)
    workspace = make_logs(tmp_path / "ws")
    with server:
        client = await _client(server.address)
        worker = await WorkerProcess(server.address, "tq-deadline").start()
        handle = await start_run(
            client, "tq-deadline", workspace, tool_approval_timeouts={"delete_files": 3}
        )
        [record] = await wait_pending(handle)
    # The server is down when the deadline passes; the worker keeps trying to poll.
    await asyncio.sleep(max(0.0, (record.expires_at - datetime.now(UTC)).total_seconds()) + 2)
    try:
        with server:
            client = await _client(server.address)
            handle = client.get_workflow_handle(handle.id, result_type=RunResult)
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        await worker.stop()
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED and done.reviewer == "system:timeout"
    assert "no decision came within 3 s" in (done.reason or "")
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_after_a_server_restart_the_approval_is_still_listed_and_decidable(
    tmp_path: Path,
) -> None:
    server = DevServer(tmp_path / "state" / "temporal.db", port=free_port(), headless=True)
    workspace = make_logs(tmp_path / "ws")
    with server:
        client = await _client(server.address)
        worker = await WorkerProcess(server.address, "tq-restart").start()
        handle = await start_run(client, "tq-restart", workspace)
        [record] = await wait_pending(handle)
    try:
        with server:
            client = await _client(server.address)
            query = (
                f"{contract.APPROVAL_IDS_KEY.name} = '{record.id}' AND ExecutionStatus = 'Running'"
            )
            listed = [execution.id async for execution in client.list_workflows(query)]
            assert listed == [handle.id]
            handle = client.get_workflow_handle(handle.id, result_type=RunResult)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-restart"))
            result = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        await worker.stop()
    assert result.approvals[0].reviewer == "after-restart"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


# --- kills in the middle of work ---------------------------------------------------------


async def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_killing_the_worker_during_the_model_call_retries_it_in_seconds(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    runs, rounds = 3, 2
    held = threading.Semaphore(0)
    seen: list[int] = []

    def model(body: dict[str, Any]) -> Any:
        seen.append(len(body["messages"]))
        if len(seen) <= runs * rounds:
            held.release()
            return HANG  # the worker that asked dies before an answer comes
        return 200, completion("done: nothing needed changing")

    relay = Relay(
        _address(env), f"tq-kill-llm-{uuid.uuid4().hex[:6]}", HITL_MODEL_BASE_URLS=fake_host()
    )
    with FakeOpenAI(model) as fake:
        await relay.start()
        try:
            handles = [
                await start_run(
                    client,
                    relay.task_queue,
                    make_logs(tmp_path / f"ws{i}"),
                    model=ModelSettings(provider="openai", name="fake", base_url=fake.base_url),
                )
                for i in range(runs)
            ]
            for round_ in range(rounds):
                await _until(lambda r=round_: len(seen) >= runs * (r + 1), "the model calls")
                await relay.kill_and_replace()
            began = asyncio.get_running_loop().time()
            results = await asyncio.wait_for(
                asyncio.gather(*(handle.result() for handle in handles)), timeout=90
            )
            recovered = asyncio.get_running_loop().time() - began
        finally:
            await relay.stop()
    assert all(result.state is RunState.COMPLETED for result in results)
    assert all(result.answer.startswith("done") for result in results)
    assert relay.kills == rounds and len(seen) == runs * (rounds + 1)
    # Heartbeats: the retry came after seconds, not after the 3-minute start-to-close.
    assert recovered < 40, recovered


async def test_killing_the_worker_during_an_approved_command_never_runs_it_twice(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    runs = 3
    relay = Relay(_address(env), f"tq-kill-cmd-{uuid.uuid4().hex[:6]}")
    command = ["sh", "-c", "echo start >> ran.txt; sleep 3; echo end >> ran.txt"]
    workspaces = [make_logs(tmp_path / f"ws{i}") for i in range(runs)]
    await relay.start()
    try:
        handles = [
            await start_run(
                client,
                relay.task_queue,
                workspace,
                script=[turn(("run_command", {"argv": command}))],
            )
            for workspace in workspaces
        ]
        for handle in handles:
            [record] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        await _until(
            lambda: all((ws / "ran.txt").exists() for ws in workspaces), "the commands to start"
        )
        await relay.kill_and_replace()
        results = await asyncio.wait_for(
            asyncio.gather(*(handle.result() for handle in handles)), timeout=90
        )
    finally:
        await relay.stop()
    await asyncio.sleep(3.5)  # the orphaned commands finish what they started
    for workspace, result in zip(workspaces, results, strict=True):
        assert (workspace / "ran.txt").read_text() == "start\nend\n", "ran exactly once"
        [done] = result.approvals
        assert done.result is not None and not done.result.ok
        assert "not repeated" in (done.result.error or "")
        assert result.state is RunState.COMPLETED


class SlowMailbox:
    """An SMTP server that keeps each message as it arrives, then is slow to say so."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        self.messages.append(str(message["Message-ID"]))
        await asyncio.sleep(self.delay)
        return "250 Message accepted for delivery"


async def test_killing_the_worker_while_an_email_is_sent_never_sends_it_twice(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    runs = 3
    mailbox = SlowMailbox(delay=3)
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    relay = Relay(
        _address(env),
        f"tq-kill-mail-{uuid.uuid4().hex[:6]}",
        HITL_SMTP_URL=f"smtp://127.0.0.1:{smtp.port}",
    )
    mail = ("send_email", {"to": ["ops@example.com"], "subject": "report", "body": "all done"})
    await relay.start()
    try:
        handles = [
            await start_run(
                client, relay.task_queue, make_logs(tmp_path / f"ws{i}"), script=[turn(mail)]
            )
            for i in range(runs)
        ]
        ids = []
        for handle in handles:
            [record] = await wait_pending(handle)
            ids.append(record.id)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        await _until(lambda: len(mailbox.messages) == runs, "the messages to arrive")
        await relay.kill_and_replace()
        results = await asyncio.wait_for(
            asyncio.gather(*(handle.result() for handle in handles)), timeout=90
        )
    finally:
        await relay.stop()
        smtp.stop()
    assert sorted(mailbox.messages) == sorted(f"<{i}@hitl-agents>" for i in ids), "once each"
    for result in results:
        [done] = result.approvals
        assert done.result is not None and "not repeated" in (done.result.error or "")


async def test_killing_the_worker_around_an_approved_deletion_deletes_exactly_the_approved_files(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    runs = 4
    relay = Relay(_address(env), f"tq-kill-del-{uuid.uuid4().hex[:6]}")
    workspaces = [make_logs(tmp_path / f"ws{i}") for i in range(runs)]
    await relay.start()
    try:
        handles = [await start_run(client, relay.task_queue, ws) for ws in workspaces]
        records = [(await wait_pending(handle))[0] for handle in handles]
        for index, (handle, record) in enumerate(zip(handles, records, strict=True)):
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
            if index % 2 == 0:
                # Somewhere in the deletion or just before it: the timing varies by design.
                await asyncio.sleep(0.02 * index)
                await relay.kill_and_replace()
        results = await asyncio.wait_for(
            asyncio.gather(*(handle.result() for handle in handles)), timeout=90
        )
    finally:
        await relay.stop()
    for workspace, result in zip(workspaces, results, strict=True):
        assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
        assert result.state is RunState.COMPLETED


async def test_killing_the_worker_during_the_preview_asks_once_and_acts_once(
    env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    # A user tool whose preview asks a slow pricing service (tests/usertools/shop.py).
    runs = 2
    relay = Relay(
        _address(env),
        f"tq-kill-preview-{uuid.uuid4().hex[:6]}",
        HITL_TOOLS="tests.usertools.shop",
        SHOP_PREVIEW_SECONDS="3",
    )
    quote = ("slow_quote", {"customer": "ACME"})
    await relay.start()
    try:
        handles = [
            await start_run(
                client, relay.task_queue, make_logs(tmp_path / f"ws{i}"), script=[turn(quote)]
            )
            for i in range(runs)
        ]

        async def previewing(handle: WorkflowHandle) -> bool:
            description = await handle.describe()
            return any(
                activity.activity_type.name == "check_tool"
                and activity.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for activity in description.raw_description.pending_activities
            )

        for _ in range(600):
            if all([await previewing(handle) for handle in handles]):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the previews never started")
        await relay.kill_and_replace()
        records = [(await wait_pending(handle, timeout=60))[0] for handle in handles]
        for handle, record in zip(handles, records, strict=True):
            assert record.preview.summary == "quote for ACME"
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        results = await asyncio.wait_for(
            asyncio.gather(*(handle.result() for handle in handles)), timeout=60
        )
    finally:
        await relay.stop()
    for result in results:
        [done] = result.approvals
        assert done.result is not None and done.result.output == {"quoted": "ACME"}
