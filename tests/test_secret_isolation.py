"""Secrets never leave the worker: not through tool output, history, the result or the model.

An approved command that reads its parent's environment is the attack. On the main
worker its output is redacted; on a tools-only worker started with no secrets (the
documented deployment, docs/secrets.md) there is nothing to find.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.models import RunResult
from hitl.secrets import minimal_environ
from tests.helpers import decision, start_run, turn, wait_pending
from tests.processes import WorkerProcess

SECRET = "sk-test-7d1f0c9e4b2a8d6f3e5c1b0a9f8e7d6c"
LEAK = ["sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ; env; echo $OPENAI_API_KEY"]


async def _approved_run(
    client: Client, task_queue: str, workspace: Path, **overrides: object
) -> tuple[WorkflowHandle, RunResult]:
    handle = await start_run(
        client,
        task_queue,
        workspace,
        script=[turn(("run_command", {"argv": LEAK}))],
        **overrides,
    )
    [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
    return handle, await asyncio.wait_for(handle.result(), timeout=60)


async def _history_bytes(handle: WorkflowHandle) -> bytes:
    """Every event as the server stores it: payloads are raw bytes here, not base64."""
    history = await handle.fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


async def test_a_command_reading_the_workers_environment_gets_the_secret_redacted(
    env: WorkflowEnvironment, client: Client, workspace: Path
) -> None:
    task_queue = "tq-redact"
    address = env.client.service_client.config.target_host
    worker = await WorkerProcess(address, task_queue, OPENAI_API_KEY=SECRET).start()
    try:
        handle, result = await _approved_run(client, task_queue, workspace)
    finally:
        await worker.stop()
    history = await _history_bytes(handle)
    assert b"[redacted:OPENAI_API_KEY]" in history, "the command did read the environment"
    assert SECRET.encode() not in history
    assert SECRET not in result.model_dump_json() and SECRET not in worker.log()


async def test_commands_on_a_worker_with_no_secrets_have_none_to_leak(
    env: WorkflowEnvironment, client: Client, workspace: Path
) -> None:
    address = env.client.service_client.config.target_host
    main_queue, command_queue = "tq-main-isolated", "tq-commands-isolated"
    main = await WorkerProcess(address, main_queue, OPENAI_API_KEY=SECRET).start()
    commands = WorkerProcess(address, command_queue)
    # The documented way: a minimal environment, nothing secret in it.
    commands.env = minimal_environ(
        {**commands.env, "OPENAI_API_KEY": SECRET}, keep=["HITL_LOG_JSON", "TEMPORAL_CONFIG_FILE"]
    )
    assert "OPENAI_API_KEY" not in commands.env
    await commands.start(extra_args=["--tools-only", "--task-queue", command_queue])
    try:
        handle, result = await _approved_run(
            client, main_queue, workspace, tool_task_queues={"run_command": command_queue}
        )
    finally:
        await commands.stop()
        await main.stop()
    [record] = result.approvals
    assert record.result is not None and record.result.ok
    history = await _history_bytes(handle)
    assert b"TEMPORAL_ADDRESS" in history, "the command ran and printed its environment"
    assert b"OPENAI_API_KEY=" not in history and SECRET.encode() not in history
    assert "command" in commands.log() and "tool.start" in commands.log()
