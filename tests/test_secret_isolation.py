"""Secrets never leave the worker: not through tool output, history, the result or the model.

An approved command that reads its parent's environment is the attack. On the main
worker its output is redacted; on a tools-only worker started with no secrets (the
documented deployment, docs/secrets.md) there is nothing to find.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from pathlib import Path

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.models import RunResult
from hitl.secrets import minimal_environ
from tests.helpers import decision, start_run, turn, wait_pending
from tests.processes import WorkerProcess
from tests.test_secrets import readings

SECRET = "sk-test-7d1f0c9e4b2a8d6f3e5c1b0a9f8e7d6c"
LEAK = ["sh", "-c", "tr '\\0' '\\n' < /proc/$PPID/environ; env; echo $OPENAI_API_KEY"]


async def _approved_run(
    client: Client, task_queue: str, workspace: Path, argv: list[str] = LEAK, **overrides: object
) -> tuple[WorkflowHandle, RunResult]:
    handle = await start_run(
        client,
        task_queue,
        workspace,
        script=[turn(("run_command", {"argv": argv}))],
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
    # It serves the tools of the runs on the main queue, and no one else's.
    commands = WorkerProcess(address, command_queue, HITL_WORKFLOW_QUEUES=main_queue)
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


# The worker's key among its neighbours in its environment, printed by each dump tool,
# one section each: wrapped, grouped, byte-swapped, with offsets and character columns.
DUMPS = {
    "base64": "base64",
    "base64 -w 50": "base64",
    "xxd -p": "xxd -p",
    "xxd": "xxd",
    "od -x": "od -x",
    "od -A x -t x1z": "od -A x -t x1z",
    "hexdump -C": "hexdump -C",
    "od": "od",
}
DUMP_ALL = [
    "sh",
    "-c",
    "e=$(tr '\\0' '\\n' < /proc/$PPID/environ | grep -e ^HOME= -e ^OPENAI_API_KEY= -e ^PATH=)\n"
    f"for dump in {' '.join(repr(dump) for dump in DUMPS)}; do\n"
    '  echo "== $dump"; printf %s "$e" | $dump\n'
    "done",
]


def _strings(value: object) -> list[str]:
    """Every string in a JSON value, and in the JSON text such strings hold (the model's
    conversation carries each tool result as JSON text)."""
    if isinstance(value, str):
        if value.startswith("{"):
            with contextlib.suppress(ValueError):
                return [value, *_strings(json.loads(value))]
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


async def test_a_key_printed_by_dump_tools_is_in_no_form_in_history(
    env: WorkflowEnvironment, client: Client, workspace: Path
) -> None:
    task_queue = "tq-redact-dumps"
    address = env.client.service_client.config.target_host
    worker = await WorkerProcess(address, task_queue, OPENAI_API_KEY=SECRET).start()
    try:
        handle, result = await _approved_run(client, task_queue, workspace, DUMP_ALL)
    finally:
        await worker.stop()
    [record] = result.approvals
    assert record.result is not None and record.result.ok, record.result
    # Every payload of the history, as the server's JSON has it, decoded.
    history = json.loads((await handle.fetch_history()).to_json())
    assert SECRET not in json.dumps(history)
    payloads = [
        base64.b64decode(node["data"])
        for node in _walk(history)
        if isinstance(node, dict) and "metadata" in node and "data" in node
    ]
    assert not any(SECRET.encode() in payload for payload in payloads)
    outputs = [
        text
        for payload in payloads
        if payload.startswith((b"{", b"["))
        for text in _strings(json.loads(payload))
        if text.startswith("== base64\n")
    ]
    assert outputs, "the command's output is in history"
    for output in outputs:
        sections = re.split(r"^== (.+)$", output, flags=re.M)[1:]
        shown = dict(zip(sections[::2], sections[1::2], strict=True))
        assert set(shown) == set(DUMPS), "every dump ran"
        for dump, text in shown.items():
            assert "[redacted:OPENAI_API_KEY]" in text, f"{dump} printed the key, redacted"
            for reading in readings(DUMPS[dump], text):
                assert SECRET.encode() not in reading, (dump, text)


def _walk(node: object) -> list[object]:
    found = [node]
    if isinstance(node, dict):
        found += [item for value in node.values() for item in _walk(value)]
    elif isinstance(node, list):
        found += [item for value in node for item in _walk(value)]
    return found
