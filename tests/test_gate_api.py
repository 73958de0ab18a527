"""The gate's public API for code outside the reference agent (issue 18): the worker's
say on a framework tool's call (`check_call` before `ApprovalGate.ask`), a run title
shown by `hitl runs`, and a `hitl` tool offered to a framework (`GatedTools.call_by_name`).

Small workflows of this module's own on a worker with `HitlPlugin`, a real dev server,
and the `hitl` CLI as a reviewer uses it.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from hitl import contract
from hitl.activities.calls import CallActivities, default_preview
from hitl.gate import MAX_TITLE_CHARS, ApprovalGate
from hitl.gated_tools import GatedTools, ToolCallOptions
from hitl.models import (
    ApprovalOutcome,
    ApprovalStatus,
    ToolCheckRequest,
    ToolPreview,
    ToolResult,
)
from hitl.plugin import HitlPlugin
from hitl.tools import (
    Previewer,
    ToolRegistrationError,
    args_model_of,
    load_previewers,
    previewer,
)
from tests.helpers import approvals, decision, wait_pending
from tests.test_cli import Hitl

# --- the user's workflows ----------------------------------------------------------------


class Ask(BaseModel):
    tool: str
    args: dict[str, Any]
    risk: int | None = None
    timeout_seconds: float | None = None
    quorum: int = 1
    preview: str | None = None
    title: str | None = None
    retitle: str | None = None


@workflow.defn
class AskingWorkflow:
    """Asks about one call of a framework's tool, from a hook outside the class."""

    @workflow.init
    def __init__(self, ask: Ask) -> None:
        self.gate = ApprovalGate(title=ask.title)

    @workflow.run
    async def run(self, ask: Ask) -> ApprovalOutcome:
        if ask.retitle is not None:
            self.gate.set_title(ask.retitle)
        return await framework_hook(ask)


async def framework_hook(ask: Ask) -> ApprovalOutcome:
    """Where a framework's approval hook lives: it finds the gate of the running workflow."""
    return await ApprovalGate.current().ask(
        ask.tool,
        ask.args,
        context="pay the supplier invoices due this week",
        preview=ToolPreview(summary=ask.preview) if ask.preview else None,
        risk=ask.risk,
        timeout=timedelta(seconds=ask.timeout_seconds) if ask.timeout_seconds else None,
        quorum=ask.quorum,
    )


class Email(BaseModel):
    workspace: str
    to: list[str]
    subject: str
    body: str


@workflow.defn
class FrameworkToolWorkflow:
    """Offers the built-in `send_email` as a framework would, and runs one call of it."""

    @workflow.init
    def __init__(self, email: Email) -> None:
        self.gate = ApprovalGate(title="send the weekly report")

    @workflow.run
    async def run(self, email: Email) -> ToolResult:
        tools = await GatedTools.of_worker(
            self.gate, ["send_email"], ToolCallOptions(workspace=email.workspace)
        )
        assert [item["function"]["name"] for item in tools.schemas()] == ["send_email"]
        # The framework hands its tool function the model's arguments as JSON text.
        arguments = json.dumps({"to": email.to, "subject": email.subject, "body": email.body})
        return await tools.call_by_name(
            "send_email", arguments, "mail the weekly report", call_id="call_1"
        )


# --- the worker's side -------------------------------------------------------------------


def invoice_preview(args: dict[str, Any]) -> tuple[ToolPreview, int]:
    return (
        ToolPreview(
            summary=f"invoice {args['customer']} ${args['amount']:.2f}",
            details=f"billed through the invoicing API (key {os.environ['INVOICE_API_KEY']})",
        ),
        85,
    )


async def cheap_preview(args: dict[str, Any]) -> tuple[ToolPreview, int]:
    return ToolPreview(summary=f"look up {args['customer']}"), 30


def exploding_preview(args: dict[str, Any]) -> ToolPreview:
    raise RuntimeError("the invoicing API is down")


PREVIEWERS = {
    "send_invoice": invoice_preview,
    "lookup_customer": cheap_preview,
    "cancel_invoice": exploding_preview,
}


@pytest.fixture
def reviewers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The worker's reviewers file (policy only, no reviewers), read by its activities."""

    def write(text: str) -> Path:
        path = tmp_path / "reviewers.toml"
        path.write_text(text)
        monkeypatch.setenv("HITL_REVIEWERS", str(path))
        return path

    return write


@pytest.fixture
async def gate_worker(client: Client, task_queue: str) -> AsyncIterator[Worker]:
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[AskingWorkflow],
        plugins=[HitlPlugin(previewers=PREVIEWERS)],
    )
    async with worker:
        yield worker


def _hitl(env: WorkflowEnvironment, task_queue: str) -> Hitl:
    return Hitl(env.client.service_client.config.target_host, task_queue)


async def _start(client: Client, task_queue: str, ask: Ask) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        AskingWorkflow.run,
        ask,
        id=f"ask-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=ApprovalOutcome,
    )


async def _listed(hitl: Hitl, command: str, match: Any, timeout: float = 20) -> dict[str, Any]:
    """The first item of `hitl COMMAND --json` that `match` accepts, once visibility has it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, out, err = await hitl(command, "--json", COLUMNS="300")
        assert code == 0, err
        found = [item for item in json.loads(out) if match(item)]
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"nothing in `hitl {command}` matched: {out}")
        await asyncio.sleep(0.2)


# --- tests -------------------------------------------------------------------------------


async def test_the_workers_previewer_gives_preview_and_risk_and_the_title_shows_in_runs(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    reviewers_file: Any,
    monkeypatch: pytest.MonkeyPatch,
    gate_worker: Worker,
) -> None:
    monkeypatch.setenv("INVOICE_API_KEY", "sk-invoice-0123456789abcdef")
    reviewers_file("[[quorum]]\nmin_risk = 80\napprovals = 2\n")
    hitl = _hitl(env, task_queue)
    handle = await _start(
        client,
        task_queue,
        Ask(
            tool="send_invoice",
            args={"customer": "ACME", "amount": 1200},
            # The workflow's own words and risk give way to the worker's previewer.
            preview="whatever the workflow says",
            risk=10,
            title="first title",
            retitle="Pay ACME's\n invoices",
        ),
    )
    [record] = await wait_pending(handle)
    listed = await _listed(hitl, "pending", lambda item: item["id"] == record.id)
    assert listed["preview"]["summary"] == "invoice ACME $1200.00"
    assert listed["risk"] == 85 and listed["tool"] == "send_invoice"
    # The reviewers file's quorum rule for risk 85, and the secret redacted in the activity.
    assert record.quorum == 2
    assert "sk-invoice-0123456789abcdef" not in record.preview.model_dump_json()
    assert "billed through the invoicing API" in record.preview.details
    assert any("the worker's 85 applies" in warning for warning in record.preview.warnings)
    run = await _listed(hitl, "runs", lambda item: item["id"] == handle.id)
    assert run["task"] == "Pay ACME's invoices"
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="not this week"))
    outcome = await asyncio.wait_for(handle.result(), timeout=20)
    assert outcome.status is ApprovalStatus.REJECTED and outcome.reason == "not this week"


async def test_a_workflow_may_only_make_the_workers_policy_stricter(
    client: Client, task_queue: str, reviewers_file: Any, gate_worker: Worker
) -> None:
    reviewers_file("[policy]\napproval_timeout = 2\n")
    # No previewer for this tool: the worker's default preview, escaped, at the default risk.
    handle = await _start(
        client,
        task_queue,
        Ask(
            tool="wire_money",
            args={"to": "ACME", "memo": "\x1b[2Jlooks harmless"},
            risk=20,
            timeout_seconds=3600,
        ),
    )
    [record] = await wait_pending(handle)
    assert record.expires_at - record.created_at == timedelta(seconds=2)
    assert record.risk == 50 and not record.preview.failed
    assert record.preview.summary.startswith("wire_money {")
    assert "\x1b" not in record.preview.summary and "\\u001b" in record.preview.summary
    assert any(
        "the run asked for a 1 h approval timeout; the worker's 2 s" in warning
        for warning in record.preview.warnings
    )
    outcome = await asyncio.wait_for(handle.result(), timeout=20)
    assert outcome.timed_out and outcome.status is ApprovalStatus.REJECTED
    # A shorter timeout and a larger quorum are the workflow's to ask for.
    reviewers_file("[policy]\napproval_timeout = 600\n")
    handle = await _start(
        client,
        task_queue,
        Ask(
            tool="wire_money",
            args={"to": "ACME"},
            risk=70,
            timeout_seconds=30,
            quorum=3,
            preview="wire ACME " + "x" * 1_000,
        ),
    )
    [record] = await wait_pending(handle)
    # No previewer on the worker: the workflow's own words, bounded.
    assert record.preview.summary.startswith("wire ACME xxx")
    assert len(record.preview.summary) <= 200 and record.preview.warnings == []
    assert record.expires_at - record.created_at == timedelta(seconds=30)
    assert record.quorum == 3 and record.risk == 70
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="no"))
    await asyncio.wait_for(handle.result(), timeout=20)


async def test_policy_approves_below_the_workers_threshold_but_never_a_failed_preview(
    client: Client, task_queue: str, reviewers_file: Any, gate_worker: Worker
) -> None:
    reviewers_file("[policy]\nauto_approve_below = 60\n")
    outcome = await asyncio.wait_for(
        client.execute_workflow(
            AskingWorkflow.run,
            Ask(tool="lookup_customer", args={"customer": "ACME"}),
            id=f"ask-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=ApprovalOutcome,
        ),
        timeout=20,
    )
    assert outcome.approved and outcome.reviewer == "policy"
    # The previewer raises: still asked, with a failed preview of the raw arguments.
    handle = await _start(
        client, task_queue, Ask(tool="cancel_invoice", args={"invoice": "INV-7"}, risk=0)
    )
    [record] = await wait_pending(handle)
    assert record.preview.failed and record.risk == 100
    assert '"invoice": "INV-7"' in record.preview.details
    assert any(
        "the preview of cancel_invoice failed (RuntimeError: the invoicing API is down)" in w
        for w in record.preview.warnings
    )
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
    outcome = await asyncio.wait_for(handle.result(), timeout=20)
    assert outcome.approved and outcome.reviewer == "alice"


@activity.defn(name="check_call")
async def broken_check_call(request: ToolCheckRequest) -> None:
    raise ApplicationError("the worker is misconfigured", non_retryable=True)


async def test_when_the_workers_check_fails_a_person_still_decides(
    client: Client, task_queue: str, reviewers_file: Any
) -> None:
    reviewers_file("[policy]\nauto_approve_below = 101\n")
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[AskingWorkflow],
        plugins=[HitlPlugin(activities=[broken_check_call])],
    ):
        handle = await _start(
            client,
            task_queue,
            Ask(tool="send_invoice", args={"customer": "ACME"}, preview="the workflow's"),
        )
        [record] = await wait_pending(handle)
        assert record.preview.failed and record.risk == 100
        assert record.preview.summary == "send_invoice: the worker could not check this call"
        assert "the worker is misconfigured" in record.preview.warnings[0]
        assert record.expires_at - record.created_at == timedelta(minutes=30)
        await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="fix it first"))
        outcome = await asyncio.wait_for(handle.result(), timeout=20)
    assert outcome.status is ApprovalStatus.REJECTED and outcome.reviewer == "alice"


class LoseFirstResult(Interceptor):
    """The worker dies after the approved tool ran, before it reported: Temporal retries."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Losing(next, self)


class _Losing(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: LoseFirstResult) -> None:
        super().__init__(next)
        self.owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await super().execute_activity(input)
        info = activity.info()
        if info.activity_type == contract.ACTIVITY_RUN_TOOL:
            self.owner.attempts.append(info.attempt)
            if info.attempt == 1:
                raise RuntimeError("the result was lost on the way back")
        return result


async def test_a_builtin_tool_offered_to_a_framework_is_approved_and_runs_once(
    env: WorkflowEnvironment, client: Client, task_queue: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    losing = LoseFirstResult()
    hitl = _hitl(env, task_queue)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FrameworkToolWorkflow],
        plugins=[HitlPlugin(tools=["builtin"])],
        interceptors=[losing],
    ):
        handle = await client.start_workflow(
            FrameworkToolWorkflow.run,
            Email(
                workspace=str(workspace),
                to=["ops@example.com"],
                subject="Weekly report",
                body="All green.",
            ),
            id=f"mail-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            result_type=ToolResult,
        )
        [record] = await wait_pending(handle)
        assert record.preview.summary == 'email ops@example.com: "Weekly report"'
        assert record.args_schema is not None and "to" in record.args_schema["properties"]
        assert record.context.original_request == "mail the weekly report"
        await _listed(hitl, "pending", lambda item: item["id"] == record.id)
        code, _, err = await hitl("approve", record.id, "--comment", "send it")
        assert code == 0, err
        result = await asyncio.wait_for(handle.result(), timeout=30)
        [done] = await approvals(handle)
    assert result.ok, result.error
    assert result.output["delivered_to"] == f"outbox/{record.id}.eml"
    assert losing.attempts == [1, 2], "the tool's activity was retried"
    assert [p.name for p in (workspace / "outbox").iterdir()] == [f"{record.id}.eml"]
    assert done.status is ApprovalStatus.APPROVED and done.executed_at is not None


# --- pure pieces ---------------------------------------------------------------------------


async def test_check_call_without_a_server() -> None:
    calls = CallActivities(load_previewers(PREVIEWERS))
    os.environ.setdefault("INVOICE_API_KEY", "sk-invoice-0123456789abcdef")
    check = await calls.check_call(
        ToolCheckRequest(tool="send_invoice", args={"customer": "A", "amount": 1}, min_risk=90)
    )
    assert check.previewed and check.risk == 90 and check.preview is not None
    check = await calls.check_call(ToolCheckRequest(tool="other", args={"x": "y" * 50_000}))
    assert not check.previewed and check.risk == 50 and check.preview is not None
    assert len(check.preview.summary) <= 200 and len(check.preview.details) <= 16 * 1024


def test_previewers_are_declared_once_per_tool() -> None:
    @previewer("send_invoice")
    def mine(args: dict[str, Any]) -> str:
        return "mine"

    assert isinstance(mine, Previewer) and mine({}) == "mine"
    assert load_previewers([mine])["send_invoice"] is mine
    with pytest.raises(ToolRegistrationError, match="two previewers"):
        load_previewers([mine, Previewer("send_invoice", invoice_preview)])
    with pytest.raises(ToolRegistrationError, match="not usable"):
        load_previewers({"no spaces please": invoice_preview})
    with pytest.raises(ToolRegistrationError, match="defines no previewers"):
        load_previewers(["hitl.text"])
    shown = default_preview("t\u202eool", {"a": "\x07"})
    assert "\u202e" not in shown.summary and "\x07" not in shown.details


def test_check_call_serves_only_the_deployments_workflows() -> None:
    from hitl.activities.callers import TrustedCallers
    from hitl.plugin import activity_name

    plugin = HitlPlugin()
    assert "check_call" in {activity_name(item) for item in plugin.activities_added}
    [guard] = [item for item in plugin.interceptors if isinstance(item, TrustedCallers)]
    assert "check_call" in guard.names
    assert "check_call" not in {
        activity_name(item) for item in HitlPlugin(tools_only=True).activities_added
    }


def test_a_schema_from_a_functions_signature() -> None:
    def send_invoice(customer: str, amount: float = 0) -> None: ...

    model = args_model_of(send_invoice)
    assert model.model_json_schema()["required"] == ["customer"]
    assert MAX_TITLE_CHARS == 500
