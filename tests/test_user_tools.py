"""A user's own tools (tests/usertools, not the project's packages) and a plain workflow.

The tools are loaded by a real worker process through the documented option; the
approvals are decided with the `hitl` CLI, as a reviewer would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.models import ApprovalStatus, RunState, ToolCheckRequest, ToolDescriptor
from hitl.plugin import HitlPlugin
from hitl.tools import ToolRegistrationError, ToolRegistry, load_tools, tool
from tests.conftest import make_logs
from tests.helpers import approvals, decision, start_run, turn, wait_decisions, wait_pending
from tests.processes import ROOT, WorkerProcess
from tests.test_cli import Hitl
from tests.test_guide import _pending_id, _run
from tests.usertools.payments import PAID, Payment, PaymentApproval, pay

SHOP = "tests.usertools.shop,builtin"


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def _ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def shop(env: WorkflowEnvironment, tmp_path: Path) -> Any:
    """A worker process with the shop's tools, loaded through `hitl worker --tools`."""
    task_queue = f"tq-shop-{uuid.uuid4().hex[:8]}"
    ledger = tmp_path / "ledger.jsonl"
    worker = WorkerProcess(_address(env), task_queue, SHOP_LEDGER=str(ledger))
    hitl_worker = [sys.executable, "-m", "hitl.cli", "worker", "--tools", SHOP]
    await worker.start(command=[*hitl_worker, "--workflows", "workflows,activities"])
    yield task_queue, ledger, worker
    await worker.stop()


async def test_a_user_tool_runs_at_once_below_its_threshold_and_asks_above_it(
    env: WorkflowEnvironment, client: Client, shop: Any, tmp_path: Path
) -> None:
    task_queue, ledger, worker = shop
    hitl = Hitl(_address(env), task_queue)
    script = [
        turn(
            ("lookup_order", {"order_id": "42"}),
            ("refund", {"order_id": "7", "amount": 20}),
            ("refund", {"order_id": "42", "amount": 150, "reason": "damaged"}),
            ("apply_discount", {"code": "SORRY10"}),
        )
    ]
    handle = await start_run(client, task_queue, make_logs(tmp_path / "ws"), script=script)
    pending = await wait_pending(handle, count=2)
    by_tool = {record.action_json.tool: record for record in pending}
    big = by_tool["refund"]
    assert big.action_json.args == {"order_id": "42", "amount": 150.0, "reason": "damaged"}
    assert big.preview.summary == "refund $150.00 on order 42" and big.risk == 30
    assert big.args_schema is not None and "amount" in big.args_schema["properties"]
    # A predicate that raises fails closed: a person decides, and is told why.
    discount = by_tool["apply_discount"]
    assert any("the approval rule of apply_discount failed" in w for w in discount.preview.warnings)
    assert any("the rules service is down" in w for w in discount.preview.warnings)
    assert [entry["amount"] for entry in _ledger(ledger)] == [20.0], "the small one ran at once"

    await _visible(client, big.id)
    code, _, err = await hitl("approve", big.id, "--comment", "customer is right")
    assert code == 0, err
    code, _, err = await hitl("reject", discount.id, "--reason", "no discounts this month")
    assert code == 0, err
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.state is RunState.COMPLETED
    entries = _ledger(ledger)
    assert [entry["amount"] for entry in entries] == [20.0, 150.0]
    assert entries[1]["key"] == big.id, "the approval id is the idempotency key"
    # A call that ran without approval has a key too, stable across its retries.
    assert entries[0]["key"].startswith(f"{handle.id}/") and entries[0]["key"].count("/") == 2
    runs = {run.tool: run for run in result.tool_runs}
    assert runs["lookup_order"].result.output == {"order_id": "42", "paid": 180.0}
    assert "REJECTED by cli-reviewer" in (runs["apply_discount"].result.error or "")
    assert "refund" in worker.log() and "tool.start" in worker.log()


async def test_a_user_tool_can_be_modified_rejected_and_timed_out(
    env: WorkflowEnvironment, client: Client, shop: Any, tmp_path: Path
) -> None:
    task_queue, ledger, _ = shop
    hitl = Hitl(_address(env), task_queue)
    refund = ("refund", {"order_id": "42", "amount": 180})
    # Modified: the reviewer refunds less, validated by the tool's own model first.
    handle = await start_run(client, task_queue, make_logs(tmp_path / "a"), script=[turn(refund)])
    [record] = await wait_pending(handle)
    await _visible(client, record.id)
    code, _, err = await hitl("modify", record.id, "--args", '{"order_id": "42", "amount": -5}')
    assert code == 1 and "amount" in err and "greater than 0" in err
    code, _, err = await hitl("modify", record.id, "--args", '{"order_id": "42", "amount": 120}')
    assert code == 0, err
    result = await asyncio.wait_for(handle.result(), timeout=30)
    [done] = result.approvals
    assert done.status is ApprovalStatus.MODIFIED
    assert done.modified_preview is not None
    assert done.modified_preview.summary == "refund $120.00 on order 42"
    # Rejected: nothing refunded.
    handle = await start_run(client, task_queue, make_logs(tmp_path / "b"), script=[turn(refund)])
    [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="fraud check"))
    await asyncio.wait_for(handle.result(), timeout=30)
    # Timed out: nothing refunded, whatever the tool's own timeout says.
    handle = await start_run(
        client,
        task_queue,
        make_logs(tmp_path / "c"),
        script=[turn(refund)],
        tool_approval_timeouts={"refund": 1},
    )
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.approvals[0].reviewer == "system:timeout"
    assert [entry["amount"] for entry in _ledger(ledger)] == [120.0]


async def test_a_run_keeps_the_tools_it_began_with(
    client: Client, shop: Any, tmp_path: Path
) -> None:
    task_queue, ledger, _ = shop
    registry = load_tools(["tests.usertools.shop"])
    [lookup, refund] = registry.descriptors(["lookup_order", "refund"])
    script = [
        turn(
            ("refund", {"order_id": "42", "amount": 20}),
            ("delete_files", {"paths": ["logs/app-2026-10-01.log"]}),
        )
    ]
    # Started with definitions other than the worker's: refused before anything runs.
    stale = refund.model_copy(update={"digest": "0" * 16})
    handle = await start_run(
        client, task_queue, make_logs(tmp_path / "ws"), script=script, tools=[lookup, stale]
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=30)
    assert "refund (0000000000000000 there" in str(failed.value.cause)
    assert _ledger(ledger) == []
    # Started with the worker's own: only those tools, for the run's whole life.
    handle = await start_run(
        client, task_queue, make_logs(tmp_path / "ws2"), script=script, tools=[lookup, refund]
    )
    result = await asyncio.wait_for(handle.result(), timeout=30)
    errors = [run.result.error or "" for run in result.tool_runs]
    assert any("unknown tool delete_files; the tools of this run are: lookup_order, refund" in e
               for e in errors)  # fmt: skip
    assert [entry["amount"] for entry in _ledger(ledger)] == [20.0]
    # A tool that changes on the worker after the run began is refused at its next call.
    from hitl.activities.tools import ToolActivities

    check = await ToolActivities(registry).check_tool(
        ToolCheckRequest(tool="refund", digest="0" * 16, args={"order_id": "42", "amount": 150})
    )
    assert not check.ok and "tool refund has changed since this run started" in (check.error or "")


async def test_registration_errors_stop_the_worker_with_what_to_fix(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    for tools, expected in [
        ("tests.usertools.shop,tests.usertools.clash", "two tools are named 'Refund' and 'refund'"),
        ("tests.usertools.nowhere", "could not be imported"),
        ("tests.usertools.nowhere", "run the worker with PYTHONPATH set to the folder"),
        ("tests.usertools", "defines no tools"),
    ]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hitl.cli",
            "worker",
            cwd=ROOT,
            env={**os.environ, "TEMPORAL_ADDRESS": _address(env), "HITL_TOOLS": tools},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 2, out.decode()
        assert expected in out.decode(), out.decode()


async def test_a_worker_loads_its_previewers_from_modules_and_refuses_bad_ones(
    env: WorkflowEnvironment,
) -> None:
    """`hitl worker --previewers MODULES` (or HITL_PREVIEWERS) loads the worker's previews of
    a framework's calls; a module that isn't there, or defines none, stops it with what to fix."""
    for option, variable, expected in [
        (["--previewers", "tests.usertools.nowhere"], "", "previewer module"),
        ([], "tests.usertools.nowhere", "could not be imported"),
        (["--previewers", "tests.usertools.shop"], "", "defines no previewers"),
    ]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hitl.cli", "worker", *option,
            cwd=ROOT,
            env={**os.environ, "TEMPORAL_ADDRESS": _address(env), "HITL_PREVIEWERS": variable},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 2, out.decode()
        assert expected in out.decode(), out.decode()


class Opaque:
    """A type no JSON Schema describes."""


def test_tools_that_cannot_be_described_are_refused_at_registration() -> None:
    with pytest.raises(ToolRegistrationError, match="can't be described as JSON Schema"):

        @tool
        def bad(thing: Opaque) -> None:
            """Takes something no schema describes."""

        ToolRegistry([bad])

    with pytest.raises(ToolRegistrationError, match="needs a type annotation"):

        @tool
        def untyped(thing) -> None:  # type: ignore[no-untyped-def]
            """No annotation."""

    with pytest.raises(ToolRegistrationError, match="can't also need approval"):

        @tool(read_only=True, requires_approval=True)
        def contradictory(x: int) -> None:
            """Read-only and flagged."""

    @tool
    def spaced(x: int) -> None:
        """One."""

    @tool(name="Spaced")
    def other(x: int) -> None:
        """Two."""

    with pytest.raises(ToolRegistrationError, match="differ by more than case"):
        ToolRegistry([spaced, other])


def test_a_tool_descriptor_says_what_the_model_and_the_gate_need() -> None:
    descriptor: ToolDescriptor = load_tools(["tests.usertools.shop"])["refund"].descriptor()
    assert descriptor.approval == "predicate" and not descriptor.idempotent
    assert descriptor.approval_timeout_seconds == 3600
    assert descriptor.description.startswith("Refund (part of) an order.")
    assert descriptor.parameters["required"] == ["order_id", "amount"]
    assert descriptor.parameters["properties"]["amount"]["exclusiveMinimum"] == 0
    again = load_tools(["tests.usertools.shop"])["refund"].descriptor()
    assert again.digest == descriptor.digest


# --- a plain workflow that uses only the gate ------------------------------------------------


async def _visible(client: Client, approval_id: str) -> None:
    query = f"HitlApprovalIds = '{approval_id}' AND HitlPendingApprovals > 0"
    for _ in range(200):
        if [wf async for wf in client.list_workflows(query)]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{approval_id} never became visible")


async def test_a_plain_workflow_with_the_gate_is_listed_and_decided_by_the_cli(
    env: WorkflowEnvironment, client: Client
) -> None:
    task_queue = f"tq-plain-{uuid.uuid4().hex[:8]}"
    hitl = Hitl(_address(env), task_queue)
    PAID.clear()
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[PaymentApproval],
        activities=[pay],
        plugins=[HitlPlugin()],
    )
    async with worker:
        handle = await client.start_workflow(
            PaymentApproval.run,
            Payment(payee="ACME Supplies", amount=950),
            id=f"payout-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        [record] = await wait_pending(handle)
        await _visible(client, record.id)
        code, out, err = await hitl("pending", "--json", COLUMNS="300")
        [mine] = [item for item in json.loads(out) if item["id"] == record.id]
        assert mine["session_id"] == handle.id and mine["tool"] == "pay"
        code, out, _ = await hitl("show", record.id, COLUMNS="300")
        assert code == 0 and "pay ACME Supplies $950.00" in out
        # The refusal rules hold here too.
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "policy"))
        code, _, err = await hitl("modify", record.id, "--args", '{"payee": "x", "amount": -1}')
        assert code == 1 and "greater than 0" in err
        log = await wait_decisions(handle, record.id, 2)
        assert "reserved for decisions the run makes itself" in (log[0].refusal or "")
        code, out, err = await hitl(
            "modify", record.id, "--args", '{"payee": "ACME Supplies", "amount": 900}'
        )
        assert code == 0, err
        assert await handle.result() == "paid ACME Supplies $900.00"
        code, _, err = await hitl("approve", record.id)
        assert code == 1 and "modified by cli-reviewer" in err
        [done] = await approvals(handle)
    assert PAID == [{"payee": "ACME Supplies", "amount": 900.0, "timeout_seconds": 300.0}]
    assert done.status is ApprovalStatus.MODIFIED


async def test_a_plain_workflow_times_out_on_its_own_deadline(
    env: WorkflowEnvironment, client: Client
) -> None:
    task_queue = f"tq-plain-{uuid.uuid4().hex[:8]}"
    PAID.clear()
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[PaymentApproval],
        activities=[pay],
        plugins=[HitlPlugin()],
    ):
        result = await client.execute_workflow(
            PaymentApproval.run,
            Payment(payee="ACME", amount=10, timeout_seconds=1),
            id=f"payout-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert result.startswith("not paid: no decision came within 1 s") and PAID == []


async def test_a_plain_workflow_that_ends_right_after_a_decision_tells_reviewers_and_shows_it_ended(
    env: WorkflowEnvironment, client: Client
) -> None:
    """The guide's own-workflow shape returns in the task that learns of the rejection: the
    gate still publishes the final state and sends the "decided" notification."""
    from temporalio.api.enums.v1 import EventType

    task_queue = f"tq-plain-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[PaymentApproval],
        activities=[pay],
        plugins=[HitlPlugin()],
    ):
        handle = await client.start_workflow(
            PaymentApproval.run,
            Payment(payee="ACME", amount=10),
            id=f"payout-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
        [record] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_REJECT, decision(record.id, "alice", reason="not this month")
        )
        assert await handle.result() == "not paid: not this month"
    described = await handle.describe()
    assert described.typed_search_attributes.get(contract.STATE_KEY) == "completed"
    assert described.typed_search_attributes.get(contract.PENDING_KEY) == 0
    history = await handle.fetch_history()
    scheduled = {
        event.event_id: event.activity_task_scheduled_event_attributes
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    notified = [
        json.loads(scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
                   .input.payloads[0].data)["event"]
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
        .activity_type.name == contract.ACTIVITY_NOTIFY_EVENT
    ]  # fmt: skip
    assert sorted(notified) == ["decided", "pending"]


async def test_a_starter_that_lacks_the_workers_tool_modules_runs_with_the_workers_tools(
    env: WorkflowEnvironment, shop: Any, tmp_path: Path
) -> None:
    """The worker has `--tools tests.usertools.shop,builtin`; the starter has no HITL_TOOLS
    and never imports them: the run takes its tools from the worker."""
    task_queue, _, _ = shop
    hitl = Hitl(_address(env), task_queue)
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [{"content": "refunding", "tool_calls": [{"id": "c1", "name": "refund",
              "arguments": json.dumps({"order_id": "42", "amount": 150})}]}]
        )
    )  # fmt: skip
    code, out = await _run(
        sys.executable, str(ROOT / "starter.py"), "Refund order 42",
        "--workspace", str(make_logs(tmp_path / "ws")), "--tools", "lookup_order,refund",
        "--script", str(script), "--no-wait", env=hitl.env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out
    assert (await _pending_id(hitl, "refund")).startswith("apr_")
    code, out = await _run(
        sys.executable, str(ROOT / "starter.py"), "Refund order 42",
        "--workspace", str(make_logs(tmp_path / "ws2")), "--tools", "refund,teleport",
        "--script", str(script), env=hitl.env, cwd=tmp_path,
    )  # fmt: skip
    assert code == 1 and "unknown tool(s) teleport" in out and "lookup_order" in out, out
