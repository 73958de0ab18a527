"""Pydantic AI on Temporal with the gate: the real framework, a real dev server, and its
OpenAI chat model against the local OpenAI-compatible server (no provider is called)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import RunContext
from pydantic_ai.durable_exec.temporal import PydanticAIPlugin
from pydantic_ai.exceptions import ApprovalRequired, ToolFailed, UserError
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RunUsage
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Replayer, Worker

from hitl import contract
from hitl.models import ApprovalStatus, ApproveDecision
from hitl.plugin import HitlPlugin
from hitl.reviewers import add_reviewer, decode_key, new_key
from hitl.reviews import Reviews
from tests import pydantic_ai_app as app
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.fake_openai import FakeOpenAI, completion, tool_messages
from tests.helpers import approvals, decision, wait_decisions, wait_pending
from tests.processes import ROOT, WorkerProcess
from tests.test_cli import Hitl


def scripted(*calls: tuple[str, dict[str, Any]], content: str = "On it.") -> Any:
    """A model that proposes `calls` in one step, then reports what the tools answered."""

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        results = tool_messages(body)
        if not results:
            return 200, completion(content, *calls)
        return 200, completion("Final: " + " | ".join(str(r["content"]) for r in results))

    return respond


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.txt"
    monkeypatch.setenv(app.EFFECTS_ENV, str(path))
    return path


@pytest.fixture
async def pai_client(client: Client) -> Client:
    """The session's server, through a client with both plugins (either order works)."""
    config = client.config()
    config["plugins"] = app.plugins()
    return Client(**config)


@pytest.fixture
async def pai_worker(pai_client: Client, task_queue: str) -> AsyncIterator[Worker]:
    async with Worker(pai_client, task_queue=task_queue, workflows=app.WORKFLOWS) as running:
        yield running


def serve(responder: Any, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    fake = FakeOpenAI(responder)
    monkeypatch.setenv(app.PORT_ENV, str(fake.server.server_address[1]))
    return fake


async def start(client: Client, task_queue: str, prompt: str) -> WorkflowHandle[Any, str]:
    return await client.start_workflow(
        app.ShopWorkflow.run,
        prompt,
        id=f"pai-{uuid.uuid4().hex[:10]}",
        task_queue=task_queue,
    )


pytestmark = pytest.mark.usefixtures("effects", "pai_worker")


async def test_an_approved_call_runs_in_the_same_agent_run(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scripted(
        ("refund", {"order": "A1", "amount": 500}), content="The parcel arrived broken."
    )
    with serve(model, monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Refund order A1, it arrived broken")
        [record] = await wait_pending(handle)
        assert record.action_json.tool == "refund"
        assert record.action_json.args == {"order": "A1", "amount": 500}
        assert record.context.original_request == "Refund order A1, it arrived broken"
        assert record.context.reasoning == "The parcel arrived broken."
        assert record.risk == 70
        assert record.preview is not None
        assert record.preview.summary == 'refund(order="A1", amount=500)'
        assert record.args_schema is not None and "amount" in record.args_schema["properties"]
        assert app.effects() == []
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        output = await handle.result()
    assert output == "Final: refunded 500 on A1"
    assert app.effects() == [f"refund A1 500 {record.id}"]
    assert len(fake.requests) == 2
    [done] = await approvals(handle)
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "alice"


async def test_a_rejection_reason_reaches_the_model(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("refund", {"order": "A2", "amount": 99_000})), monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Refund A2 in full")
        [record] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_REJECT, decision(record.id, reason="over the refund limit")
        )
        output = await handle.result()
    assert app.effects() == []
    [answer] = tool_messages(fake.requests[-1])
    assert "over the refund limit" in answer["content"]
    assert "over the refund limit" in output


async def test_a_modification_is_checked_then_runs_with_the_new_arguments(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("refund", {"order": "A3", "amount": 9000})), monkeypatch):
        handle = await start(pai_client, task_queue, "Refund A3")
        [record] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(record.id, args={"order": "A3", "amount": "lots"})
        )
        [refused] = await wait_decisions(handle, record.id, 1)
        assert refused.outcome == "refused" and "amount" in (refused.refusal or "")
        [still] = await wait_pending(handle)
        assert still.id == record.id
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(record.id, args={"order": "A3", "amount": 4500})
        )
        output = await handle.result()
    assert app.effects() == [f"refund A3 4500 {record.id}"]
    assert output == "Final: refunded 4500 on A3"
    [done] = await approvals(handle)
    assert done.status is ApprovalStatus.MODIFIED


async def test_the_gate_times_out_and_the_model_is_told(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(
        scripted(("send_email", {"to": "ceo@example.com", "subject": "hi"})), monkeypatch
    ) as fake:
        handle = await start(pai_client, task_queue, "Email the CEO")
        [pending] = await wait_pending(handle)
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(pending.id, args={"to": "me@example.com"})
        )
        [refused] = await wait_decisions(handle, pending.id, 1)
        assert refused.outcome == "refused"
        output = await asyncio.wait_for(handle.result(), 30)
    [record] = await approvals(handle)
    assert record.status is ApprovalStatus.REJECTED and record.reviewer == "system:timeout"
    assert app.effects() == []
    assert "No reviewer decided in time" in tool_messages(fake.requests[-1])[0]["content"]
    assert "No reviewer decided in time" in output


async def test_several_calls_of_one_step_are_asked_side_by_side_and_decided_apart(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = scripted(
        ("refund", {"order": "B1", "amount": 100}),
        ("refund", {"order": "B2", "amount": 200}),
        ("lookup", {"order": "B3"}),
        ("delete_account", {"user": "admin-bob"}),
    )
    with serve(model, monkeypatch) as fake:
        handle = await start(
            pai_client, task_queue, "Refund B1 and B2, look B3 up, delete admin-bob"
        )
        pending = await wait_pending(handle, 3)
        by_call = {(r.action_json.tool, json.dumps(r.action_json.args)): r for r in pending}
        b1 = by_call[("refund", json.dumps({"order": "B1", "amount": 100}))]
        b2 = by_call[("refund", json.dumps({"order": "B2", "amount": 200}))]
        admin = by_call[("delete_account", json.dumps({"user": "admin-bob"}))]
        await handle.signal(contract.SIGNAL_REJECT, decision(b2.id, reason="B2 was never paid"))
        await handle.signal(contract.SIGNAL_APPROVE, decision(admin.id))
        await wait_decisions(handle, admin.id, 1)
        await wait_decisions(handle, b2.id, 1)
        assert [r.id for r in await wait_pending(handle)] == [b1.id]
        assert admin.context.reasoning == "On it."
        await handle.signal(contract.SIGNAL_APPROVE, decision(b1.id))
        output = await handle.result()
    assert sorted(app.effects()) == sorted([f"refund B1 100 {b1.id}", "delete admin-bob"])
    answers = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert answers["call_0"] == "refunded 100 on B1"
    assert "B2 was never paid" in answers["call_1"]
    assert answers["call_2"] == "B3: 2 items, 4200 cents"
    assert answers["call_3"] == "deleted admin-bob"
    assert output.startswith("Final: ")


async def test_reviewer_rules_and_signed_decisions_are_enforced(
    pai_client: Client,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "carol", tools=["send_email"])
    add_reviewer(reviewers, "dave", max_risk=60)
    add_reviewer(reviewers, "erin")
    key = new_key()
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{key}")  # only signed decisions count
    with serve(scripted(("refund", {"order": "C1", "amount": 10})), monkeypatch):
        handle = await start(pai_client, task_queue, "Refund C1")
        [record] = await wait_pending(handle)
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "erin"))
        [unsigned] = await wait_decisions(handle, record.id, 1)
        assert unsigned.outcome == "refused" and unsigned.code == "unauthenticated"
        reviews = Reviews(pai_client, signer=("api", decode_key(key)))
        for name in ("carol", "dave"):
            await reviews.decide(
                ApproveDecision(approval_id=record.id, reviewer=name), workflow_id=handle.id
            )
        _, carol, dave = await wait_decisions(handle, record.id, 3)
        assert carol.outcome == "refused" and dave.outcome == "refused"
        assert "refund" in (carol.refusal or "") and "risk" in (dave.refusal or "")
        assert app.effects() == []
        await reviews.decide(
            ApproveDecision(approval_id=record.id, reviewer="erin"), workflow_id=handle.id
        )
        assert await handle.result() == "Final: refunded 10 on C1"
    assert app.effects() == [f"refund C1 10 {record.id}"]


async def test_an_approved_call_whose_attempt_died_is_not_repeated(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt charges, then outlives its timeout as a dead worker would:
    # Temporal starts a second attempt, which must not charge again.
    app.ATTEMPTS.clear()
    with serve(scripted(("charge", {"order": "D1"})), monkeypatch) as fake:
        handle = await start(pai_client, task_queue, "Charge D1")
        [record] = await wait_pending(handle)
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        output = await asyncio.wait_for(handle.result(), 30)
    assert app.effects() == [f"charge D1 {record.id}"]
    assert app.ATTEMPTS["D1"] == 1
    [answer] = tool_messages(fake.requests[-1])
    assert "not repeated" in answer["content"]
    assert "not repeated" in output
    started = [
        e
        for e in (await handle.fetch_history()).events
        if e.activity_task_started_event_attributes.attempt
    ]
    assert max(e.activity_task_started_event_attributes.attempt for e in started) == 2


async def test_an_idempotent_tool_is_retried_with_its_approval_id_as_the_key(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.ATTEMPTS.clear()
    with serve(scripted(("ship", {"order": "E1"})), monkeypatch):
        handle = await start(pai_client, task_queue, "Ship E1")
        [record] = await wait_pending(handle)
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        assert await asyncio.wait_for(handle.result(), 30) == "Final: shipped E1"
    assert app.ATTEMPTS["ship E1"] == 2
    assert app.effects() == [f"ship E1 {record.id}"]


async def test_an_approval_flag_without_an_approval_of_the_run_is_not_honoured() -> None:
    # Pydantic AI serializes `tool_call_approved` into the tool activity's payload; the
    # toolset honours it only with an approval the run confirms.

    ctx = RunContext(deps=None, model=TestModel(), usage=RunUsage(), tool_call_approved=True)
    tools = await app.toolset.get_tools(ctx)

    async def call(name: str, args: dict[str, Any]) -> Any:
        return await app.toolset.call_tool(name, args, ctx, tools[name])

    env = ActivityEnvironment()
    with pytest.raises(ToolFailed, match="needs a reviewer's approval"):
        await env.run(call, "refund", {"order": "F1", "amount": 1})
    with pytest.raises(ApprovalRequired):
        await env.run(call, "delete_account", {"user": "admin-eve"})
    assert app.effects() == []
    assert await env.run(call, "lookup", {"order": "F1"}) == "F1: 2 items, 4200 cents"


async def test_a_worker_killed_while_an_approval_waits_and_the_run_goes_on(
    env: Any, pai_client: Client, monkeypatch: pytest.MonkeyPatch, effects: Path
) -> None:
    queue = f"pai-kill-{uuid.uuid4().hex[:8]}"
    with serve(scripted(("refund", {"order": "G1", "amount": 300})), monkeypatch) as fake:
        port = str(fake.server.server_address[1])
        worker = WorkerProcess(
            env.client.service_client.config.target_host,
            queue,
            **{app.PORT_ENV: port, app.EFFECTS_ENV: str(effects)},
        )
        command = [sys.executable, "-m", "tests.pydantic_ai_app", queue]
        await worker.start(command=command)
        try:
            handle = await start(pai_client, queue, "Refund G1")
            [record] = await wait_pending(handle)
        finally:
            await worker.kill()
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-the-crash"))
        again = WorkerProcess(
            env.client.service_client.config.target_host,
            queue,
            **{app.PORT_ENV: port, app.EFFECTS_ENV: str(effects)},
        )
        await again.start(command=command)
        try:
            output = await asyncio.wait_for(handle.result(), 60)
            [done] = await approvals(handle)
        finally:
            await again.stop()
    assert output == "Final: refunded 300 on G1"
    assert app.effects() == [f"refund G1 300 {record.id}"]
    assert done.reviewer == "after-the-crash"


HISTORIES = Path(__file__).parent / "histories" / "pydantic_ai"


async def test_a_run_replays_and_so_do_the_recorded_ones(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of today's code replays; so does every recorded history (HITL_RECORD=1
    records this run's as tests/histories/pydantic_ai/v1-step.json, never over one)."""
    model = scripted(
        ("refund", {"order": "H1", "amount": 100}),
        ("refund", {"order": "H2", "amount": 200}),
        ("refund", {"order": "H3", "amount": 300}),
        ("lookup", {"order": "H4"}),
    )
    with serve(model, monkeypatch):
        handle = await start(pai_client, task_queue, "Refund H1, H2 and H3")
        one, two, three = sorted(
            await wait_pending(handle, 3), key=lambda r: r.action_json.args["order"]
        )
        await handle.signal(contract.SIGNAL_APPROVE, decision(one.id))
        await handle.signal(contract.SIGNAL_REJECT, decision(two.id, reason="not paid"))
        await handle.signal(
            contract.SIGNAL_MODIFY, decision(three.id, args={"order": "H3", "amount": 150})
        )
        await handle.result()
    history = await handle.fetch_history()
    if os.environ.get("HITL_RECORD"):
        target = HISTORIES / "v1-step.json"
        assert not target.exists(), f"{target} is recorded already; record under a new label"
        target.write_text(history.to_json())
    replayer = Replayer(workflows=app.WORKFLOWS, plugins=[PydanticAIPlugin(), HitlPlugin()])
    recorded = sorted(HISTORIES.glob("*.json"))
    assert recorded, "no recorded Pydantic AI history (HITL_RECORD=1 records one)"
    for item in [history, *(WorkflowHistory.from_json(p.stem, p.read_text()) for p in recorded)]:
        result = await replayer.replay_workflow(item, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{item.workflow_id}: {result.replay_failure}"


async def test_the_deprecated_temporal_agent_and_either_plugin_order(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = client.config()
    config["plugins"] = [HitlPlugin(), PydanticAIPlugin()]  # the other order
    reversed_client = Client(**config)
    queue = f"pai-legacy-{uuid.uuid4().hex[:8]}"
    async with Worker(reversed_client, task_queue=queue, workflows=app.WORKFLOWS):
        with serve(scripted(("refund", {"order": "L1", "amount": 5})), monkeypatch):
            handle = await reversed_client.start_workflow(
                app.LegacyShopWorkflow.run, "Refund L1", id=f"pai-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )  # fmt: skip
            [record] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
            assert await handle.result() == "Final: refunded 5 on L1"
    assert app.effects() == [f"refund L1 5 {record.id}"]


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "rejected"])
async def test_a_builtin_hitl_tool_runs_in_the_workflow_asked_once(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, approve: bool
) -> None:
    """The worker's `delete_files` offered through `HitlToolset`: the gate shows the
    toolkit's preview (the files), and the approved list is deleted once, by `run_tool`."""
    workspace = make_logs(tmp_path / "ws")
    before = files_in(workspace)
    config = client.config()
    config["plugins"] = [PydanticAIPlugin(), HitlPlugin(tools=["builtin"])]
    files_client = Client(**config)
    queue = f"pai-files-{uuid.uuid4().hex[:8]}"
    doomed = OLD_LOGS[:2]
    model = scripted(("delete_files", {"paths": doomed}), content="Those two logs are old.")
    async with Worker(files_client, task_queue=queue, workflows=app.WORKFLOWS):
        with serve(model, monkeypatch) as fake:
            handle = await files_client.start_workflow(
                app.FilesWorkflow.run,
                args=["Delete the two oldest logs", str(workspace)],
                id=f"pai-files-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
            )
            [record] = await wait_pending(handle)
            assert record.action_json.tool == "delete_files"
            assert record.action_json.args == {"paths": doomed}
            assert record.preview is not None
            assert record.preview.summary.startswith("delete 2 files")
            assert all(path in record.preview.details for path in doomed)
            assert record.context.original_request == "Delete the two oldest logs"
            assert record.context.reasoning == "Those two logs are old."
            assert record.args_schema is not None and "paths" in record.args_schema["properties"]
            assert files_in(workspace) == before
            # The model saw the tool as the worker describes it.
            [offered] = fake.requests[0]["tools"]
            assert offered["function"]["name"] == "delete_files"
            assert "paths" in offered["function"]["parameters"]["properties"]
            if approve:
                await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
            else:
                await handle.signal(
                    contract.SIGNAL_REJECT, decision(record.id, reason="keep them for the audit")
                )
            output = await asyncio.wait_for(handle.result(), 30)
            [answer] = tool_messages(fake.requests[-1])
        [done] = await approvals(handle)  # asked once: no second approval
    result = json.loads(answer["content"])
    history = await handle.fetch_history()
    activities = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    replayer = Replayer(workflows=app.WORKFLOWS, plugins=[PydanticAIPlugin(), HitlPlugin()])
    await replayer.replay_workflow(history)  # the lazily built tools replay
    # The call ran in the workflow: no Pydantic AI tool activity (`agent__files__toolset__
    # hitl__call_tool` and the like), only its model requests and the hitl activities; the
    # tools were asked of the worker once for the run, not at each step.
    assert [name for name in activities if name.startswith("agent__files__")] == [
        "agent__files__model_request"
    ] * 2, activities
    assert activities.count("describe_tools") == 1, activities
    assert output.startswith("Final: ")
    if approve:
        assert done.status is ApprovalStatus.APPROVED and done.executed_at is not None
        assert result["ok"] is True and result["output"]["deleted"] == doomed
        assert files_in(workspace) == sorted(set(before) - set(doomed))
        assert activities.count("run_tool") == 1, activities
    else:
        assert done.status is ApprovalStatus.REJECTED
        assert result["ok"] is False and "keep them for the audit" in result["error"]
        assert files_in(workspace) == before == sorted(OLD_LOGS + NEW_LOGS + OTHER)
        assert "run_tool" not in activities, activities


async def test_hitl_tools_outside_a_workflow_say_so() -> None:
    ctx = RunContext(deps="ws", model=TestModel(), usage=RunUsage())
    with pytest.raises(UserError, match="only inside a Temporal workflow"):
        await (await app.files_toolset.for_run(ctx)).get_tools(ctx)


async def test_the_example_runs_as_written_offline(env: Any, tmp_path: Path) -> None:
    """`make example-pydantic-ai` on the session's server, answers piped: the refund is
    approved and made once, the email rejected with a reason the model reports."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_", "OPENAI_"))
    }
    environ["TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.pydantic_ai.run", cwd=ROOT, env=environ,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(b"y\nn\nwrong address\n"), 90)
    text = out.decode()
    assert process.returncode == 0, text
    assert "offline" in text and "no LLM was called" in text
    assert "A reviewer rejected the call: wrong address" in text
    ledger = [json.loads(line) for line in text.splitlines() if line.startswith('{"kind"')]
    assert [entry["kind"] for entry in ledger] == ["refund"]
    assert ledger[0]["idempotency_key"].startswith("apr_")


async def test_the_integration_guide_runs_as_written(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/integrations.md's Pydantic AI files, copied out and run as it says, the model
    being the local server (OPENAI_BASE_URL), the approval decided with `hitl approve`."""
    guide = (ROOT / "docs" / "integrations.md").read_text()
    section = guide.split("## Pydantic AI", 1)[1].split("\n## ", 1)[0]
    for name, body in re.findall(r'```python title="([^"]+)"\n(.*?)```', section, re.DOTALL):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    model = scripted(("lookup_order", {"order": "A-1001"}))

    def respond(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if len(tool_messages(body)) == 1:
            return 200, completion(
                "Broken: refunding.", ("refund", {"order": "A-1001", "amount_cents": 4200})
            )
        return model(body)

    address = env.client.service_client.config.target_host
    with FakeOpenAI(respond) as fake:
        environ = {
            "OPENAI_API_KEY": "sk-local",
            "OPENAI_BASE_URL": fake.base_url,
            "PYTHONPATH": f"{tmp_path}:{ROOT}",
            "SUPPORT_LEDGER": str(tmp_path / "ledger.txt"),
        }
        worker = WorkerProcess(address, "support", **environ)
        await worker.start(command=[sys.executable, "-m", "supportbot.worker"])
        try:
            starter = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "supportbot.start", "Order A-1001 arrived broken",
                "support-guide", cwd=tmp_path, env=worker.env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            hitl = Hitl(address, "support")
            hitl.env["PYTHONPATH"] = str(ROOT)
            for _ in range(200):
                code, out, _ = await hitl("pending", "--json", "--tool", "refund")
                if code == 0 and json.loads(out):
                    break
                await asyncio.sleep(0.1)
            [item] = json.loads(out)
            code, out, err = await hitl("approve", item["id"])
            assert code == 0, err
            printed, _ = await asyncio.wait_for(starter.communicate(), 60)
        finally:
            await worker.stop()
    assert starter.returncode == 0, printed.decode()
    assert "refunded 4200 cents on A-1001" in printed.decode()
    assert (tmp_path / "ledger.txt").read_text() == f"refund A-1001 4200 {item['id']}\n"


async def test_the_bench_measures_both_paths(client: Client) -> None:
    from bench.pydantic_ai import measure

    figures = await measure(client, count=2)
    assert figures["count"] == 2 and figures["ratio_p50"] > 0
    assert 0 < figures["plain_signal_p50_ms"] < 5_000 and 0 < figures["gate_p50_ms"] < 5_000


async def test_a_workflow_without_a_gate_fails_saying_so(
    pai_client: Client, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(scripted(("refund", {"order": "N1", "amount": 1})), monkeypatch):
        handle = await pai_client.start_workflow(
            app.ForgotTheGateWorkflow.run, "Refund N1", id=f"pai-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )  # fmt: skip
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)
    assert "has no approval gate" in str(failed.value.cause)
    assert app.effects() == []
