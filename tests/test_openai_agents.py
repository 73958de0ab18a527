"""The OpenAI Agents SDK behind the gate: the real SDK and `temporalio-openai-agents`, a
real dev server, the model played by the local OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from agents import Model, ModelProvider, OpenAIChatCompletionsModel, set_tracing_disabled
from openai import AsyncOpenAI
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.openai_agents import ModelActivityParameters, OpenAIAgentsPlugin
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Replayer,
    Worker,
)

from examples.openai_agents.workflow import SupportAgentWorkflow, SupportAnswer, SupportRequest
from hitl import contract
from hitl.plugin import HitlPlugin
from tests.fake_openai import FakeOpenAI, completion, tool_messages
from tests.helpers import approvals, decision, wait_decisions, wait_pending
from tests.openai_files_workflow import FilesAgentWorkflow, FilesJob

set_tracing_disabled(True)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # No key: the SDK exports no traces, nothing leaves this machine.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")


async def wait_status(
    handle: WorkflowHandle, approval_id: str, status: str, timeout: float = 20
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = next(r for r in await approvals(handle) if r.id == approval_id)
        if record.status.value == status:
            return record
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{approval_id} is {record.status.value}, not {status}")
        await asyncio.sleep(0.05)


class LocalProvider(ModelProvider):
    def __init__(self, base_url: str) -> None:
        self.client = AsyncOpenAI(base_url=base_url, api_key="sk-test-local", max_retries=0)

    def get_model(self, model_name: str | None) -> Model:
        return OpenAIChatCompletionsModel(model_name or "fake-gpt-1", openai_client=self.client)


def agents_plugin(fake: FakeOpenAI) -> OpenAIAgentsPlugin:
    return OpenAIAgentsPlugin(
        model_params=ModelActivityParameters(start_to_close_timeout=timedelta(seconds=30)),
        model_provider=LocalProvider(fake.base_url),
    )


def agents_client(client: Client, fake: FakeOpenAI, hitl_first: bool = False) -> Client:
    plugins = [agents_plugin(fake), HitlPlugin()]
    return Client(
        client.service_client,
        namespace=client.namespace,
        plugins=list(reversed(plugins)) if hitl_first else plugins,
    )


@asynccontextmanager
async def agent_worker(
    client: Client, fake: FakeOpenAI, task_queue: str, activities: list[Any] | None = None
) -> AsyncIterator[Client]:
    from examples.openai_agents.activities import send_email

    own = agents_client(client, fake)
    async with Worker(
        own,
        task_queue=task_queue,
        workflows=[SupportAgentWorkflow],
        activities=activities if activities is not None else [send_email],
    ):
        yield own


def scripted(*turns: Callable[[dict[str, Any]], dict[str, Any]] | dict[str, Any]):
    """Answers the n-th model request with the n-th turn (a completion, or a function
    of the request)."""
    count = [0]

    def responder(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        turn = turns[min(count[0], len(turns) - 1)]
        count[0] += 1
        return 200, turn(body) if callable(turn) else turn

    return responder


def final(body: dict[str, Any]) -> dict[str, Any]:
    return completion("Done: " + " | ".join(m["content"] for m in tool_messages(body)))


async def start(
    client: Client, task_queue: str, request: str = "refund A1 and B2", **fields: Any
) -> WorkflowHandle[Any, SupportAnswer]:
    return await client.start_workflow(
        SupportAgentWorkflow.run,
        SupportRequest(request=request, **fields),
        id=f"oai-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
    )


TWO_REFUNDS = completion(
    "Refunding both orders.",
    ("refund", {"order_id": "A1", "amount_eur": 50}),
    ("refund", {"order_id": "B2", "amount_eur": 70}),
)


async def test_two_calls_of_a_turn_are_decided_side_by_side_and_the_reason_reaches_the_model(
    client: Client, task_queue: str
) -> None:
    with FakeOpenAI(scripted(TWO_REFUNDS, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue)
            first, second = sorted(
                await wait_pending(handle, 2), key=lambda r: r.action_json.args["order_id"]
            )
            assert first.context.original_request == "refund A1 and B2"
            assert first.context.reasoning == "Refunding both orders."
            assert first.preview.summary == "refund 50 EUR on order A1"
            assert first.risk == 70 and first.args_schema is not None
            # The second is decided first; each stands alone.
            await handle.signal(
                contract.SIGNAL_REJECT, decision(second.id, "bob", reason="B2 was never paid")
            )
            await wait_status(handle, second.id, "rejected")
            assert [r.status.value for r in await approvals(handle)].count("pending") == 1
            await handle.signal(contract.SIGNAL_APPROVE, decision(first.id))
            answer = await asyncio.wait_for(handle.result(), 30)
            await record_history(handle, "side-by-side")
    tools = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert tools["call_0"] == "refunded 50 EUR on order A1"
    assert tools["call_1"] == "Rejected by the reviewer: B2 was never paid"
    assert answer.answer.startswith("Done: ")
    assert sorted(answer.approvals) == sorted([f"{first.id} approved", f"{second.id} rejected"])


async def test_a_modification_is_checked_against_the_tool_schema_and_runs_as_modified(
    client: Client, task_queue: str
) -> None:
    one = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(one, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1")
            [record] = await wait_pending(handle)
            bad = {"order_id": "A1", "amount_eur": "lots"}
            await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, args=bad))
            [refused] = await wait_decisions(handle, record.id, 1)
            assert refused.refusal and "amount_eur" in refused.refusal
            [still] = await wait_pending(handle)
            assert still.id == record.id
            good = {"order_id": "A1", "amount_eur": 5}
            await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, args=good))
            answer = await asyncio.wait_for(handle.result(), 30)
            await record_history(handle, "modified")
    [message] = tool_messages(fake.requests[-1])
    assert message["content"] == "refunded 5 EUR on order A1"
    # The conversation shows the call as it ran: with the reviewer's arguments.
    [call] = [c for m in fake.requests[-1]["messages"] for c in m.get("tool_calls") or []]
    assert json.loads(call["function"]["arguments"]) == good
    assert answer.approvals == [f"{record.id} modified"]


async def test_a_call_nobody_decides_in_time_is_rejected_and_the_model_is_told(
    client: Client, task_queue: str
) -> None:
    one = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(one, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1", approval_timeout_seconds=2)
            answer = await asyncio.wait_for(handle.result(), 30)
    [message] = tool_messages(fake.requests[-1])
    assert message["content"].startswith("Rejected: no reviewer decided in time")
    [outcome] = answer.approvals
    assert outcome.endswith("rejected")


async def test_a_reviewer_the_rules_do_not_allow_is_refused(
    client: Client, task_queue: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hitl.reviewers import add_reviewer

    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "alice")
    add_reviewer(reviewers, "carol", tools=["send_email"])
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    one = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(one, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1")
            [record] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "carol"))
            [refused] = await wait_decisions(handle, record.id, 1)
            assert "may not decide refund calls" in (refused.refusal or "")
            await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice"))
            answer = await asyncio.wait_for(handle.result(), 30)
    assert answer.approvals == [f"{record.id} approved"]


EMAIL = completion(
    "Emailing the customer.",
    ("send_email", {"to": "c@example.com", "subject": "Refund", "body": "Refunded."}),
    call_prefix="call_mail",
)


async def test_an_approved_activity_tool_has_its_effect_once_when_its_activity_retries(
    client: Client, task_queue: str
) -> None:
    from temporalio import activity

    from hitl.integrations.openai_agents import approval_key

    effects: dict[str, int] = {}
    attempts: list[int] = []

    @activity.defn(name="send_email")
    async def flaky_send_email(to: str, subject: str, body: str) -> str:
        key = approval_key()
        attempts.append(activity.info().attempt)
        if key not in effects:  # the idempotency check a real mail API does with the key
            effects[key] = effects.get(key, 0) + 1
        if activity.info().attempt == 1:
            raise RuntimeError("the connection dropped after the mail went out")
        return f"sent to {to}"

    refund_first = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(refund_first, EMAIL, final)) as fake:
        async with agent_worker(client, fake, task_queue, [flaky_send_email]) as own:
            handle = await start(own, task_queue, "refund A1 and tell the customer")
            [refund] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(refund.id))
            # The next turn's call is a new approval.
            record = None
            while record is None:
                await asyncio.sleep(0.05)
                pending = [r for r in await approvals(handle) if r.status.value == "pending"]
                record = pending[0] if pending else None
            assert record.action_json.tool == "send_email"
            assert record.context.reasoning == "Emailing the customer."
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
            answer = await asyncio.wait_for(handle.result(), 60)
    assert attempts == [1, 2]
    assert effects == {record.id: 1}
    [message] = tool_messages(fake.requests[-1])[-1:]
    assert message["content"] == "sent to c@example.com"
    assert answer.approvals == [f"{refund.id} approved", f"{record.id} approved"]


async def test_pending_approvals_and_the_run_state_are_carried_across_continue_as_new(
    client: Client, task_queue: str
) -> None:
    with FakeOpenAI(scripted(TWO_REFUNDS, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue)
            first, second = sorted(
                await wait_pending(handle, 2), key=lambda r: r.action_json.args["order_id"]
            )
            await handle.signal(contract.SIGNAL_APPROVE, decision(first.id))
            await wait_status(handle, first.id, "approved")
            await handle.signal("continue_as_new")
            latest = own.get_workflow_handle(handle.id, result_type=SupportAnswer)
            deadline = asyncio.get_running_loop().time() + 20
            while (await latest.describe()).run_id == handle.result_run_id:
                assert asyncio.get_running_loop().time() < deadline, "never continued as new"
                await asyncio.sleep(0.1)
            [carried] = await wait_pending(latest)
            assert (carried.id, carried.expires_at) == (second.id, second.expires_at)
            bad = {"order_id": "B2", "amount_eur": "all"}
            await latest.signal(contract.SIGNAL_MODIFY, decision(second.id, args=bad))
            [refused] = await wait_decisions(latest, second.id, 1)
            assert refused.refusal and "amount_eur" in refused.refusal
            await latest.signal(
                contract.SIGNAL_MODIFY,
                decision(second.id, args={"order_id": "B2", "amount_eur": 7}),
            )
            answer = await asyncio.wait_for(latest.result(), 30)
            await record_history(latest, "continued")
    tools = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert tools == {
        "call_0": "refunded 50 EUR on order A1",
        "call_1": "refunded 7 EUR on order B2",
    }
    assert len(fake.requests) == 2  # the model was not asked again for the carried turn
    assert answer.approvals == [f"{second.id} modified"]


async def test_the_plugin_order_that_cannot_work_says_the_right_one(
    client: Client, task_queue: str
) -> None:
    with FakeOpenAI(scripted(final)) as fake:
        with pytest.raises(ValueError, match=r"put HitlPlugin after OpenAIAgentsPlugin"):
            agents_client(client, fake, hitl_first=True)
        # The right order keeps the gate's records whole (OpenAI's converter alone drops
        # fields never assigned, such as a record's decision log).
        own = agents_client(client, fake)
        from hitl.integrations.openai_agents import HitlOpenAIPayloadConverter

        assert isinstance(
            own.data_converter.payload_converter._inner_payload_converter,  # type: ignore[attr-defined]
            HitlOpenAIPayloadConverter,
        )


HISTORIES = Path(__file__).parent / "histories" / "openai_agents"


async def record_history(handle: WorkflowHandle, label: str) -> None:
    """`HITL_RECORD_HISTORIES=1 pytest tests/test_openai_agents.py` records the histories
    the replay test replays (once per version of the workflow code)."""
    if os.environ.get("HITL_RECORD_HISTORIES"):
        history = await handle.fetch_history()
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / f"v1-{label}.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_history_replays_on_todays_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    with FakeOpenAI(scripted(final)) as fake:
        replayer = Replayer(
            workflows=[SupportAgentWorkflow], plugins=[agents_plugin(fake), HitlPlugin()]
        )
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
    assert len(fake.requests) == 0  # a replay calls no model


async def test_a_worker_killed_while_an_approval_waits_and_the_run_resumes_on_another(
    env: Any, client: Client, task_queue: str
) -> None:
    import sys

    from tests.processes import WorkerProcess

    with FakeOpenAI(scripted(TWO_REFUNDS, final)) as fake:
        address = env.client.service_client.config.target_host
        process = WorkerProcess(
            address,
            task_queue,
            OPENAI_BASE_URL=fake.base_url,
            OPENAI_AGENTS_DISABLE_TRACING="1",
        )
        await process.start(command=[sys.executable, "-m", "examples.openai_agents.worker"])
        try:
            own = agents_client(client, fake)
            handle = await start(own, task_queue)
            first, second = sorted(
                await wait_pending(handle, 2), key=lambda r: r.action_json.args["order_id"]
            )
        finally:
            await process.kill()
        async with agent_worker(client, fake, task_queue):
            await handle.signal(contract.SIGNAL_APPROVE, decision(first.id))
            await handle.signal(contract.SIGNAL_REJECT, decision(second.id, reason="not owed"))
            answer = await asyncio.wait_for(handle.result(), 60)
    tools = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert tools == {
        "call_0": "refunded 50 EUR on order A1",
        "call_1": "Rejected by the reviewer: not owed",
    }
    assert len(fake.requests) == 2  # the model was not asked again after the restart
    assert sorted(answer.approvals) == sorted([f"{first.id} approved", f"{second.id} rejected"])


def test_the_example_runs_offline_as_make_runs_it() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "examples.openai_agents.run", "--yes"],
        cwd=Path(__file__).resolve().parent.parent,
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TEMPORAL_", "HITL_", "OPENAI_"))
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "offline" in done.stdout
    assert "tool: refunded 40 EUR on order A-1001" in done.stdout
    assert "tool: email to customer@example.com sent (apr_" in done.stdout


def test_only_the_agents_own_function_tools_take_modified_arguments() -> None:
    from agents import Agent
    from agents.items import ToolApprovalItem
    from agents.tool import ToolOrigin, ToolOriginType
    from openai.types.responses import ResponseFunctionToolCall

    from examples.openai_agents.workflow import AGENT
    from hitl.integrations.openai_agents import _call_of

    def call(name: str, args: str = '{"order_id": "A1", "amount_eur": 5}') -> Any:
        return ResponseFunctionToolCall(
            type="function_call", call_id="c1", name=name, arguments=args
        )

    tool, args, schema, modifiable = _call_of(ToolApprovalItem(AGENT, call("refund")))
    assert (tool, args, modifiable) == ("refund", {"order_id": "A1", "amount_eur": 5}, True)
    assert schema is not None and schema["required"] == ["order_id", "amount_eur"]
    # An MCP server's tool: its call runs only as the model made it.
    mcp = ToolApprovalItem(
        AGENT,
        call("refund"),
        tool_origin=ToolOrigin(type=ToolOriginType.MCP, mcp_server_name="billing"),
    )
    assert _call_of(mcp)[3] is False
    # A hosted MCP approval request (Responses API): not a function call at all.
    hosted = ToolApprovalItem(
        Agent(name="x"),
        {"type": "mcp_approval_request", "id": "m1", "name": "wire", "arguments": "{}"},
    )
    assert _call_of(hosted)[0] == "wire" and _call_of(hosted)[3] is False
    # Arguments no reviewer can read are rejected without asking.
    assert _call_of(ToolApprovalItem(AGENT, call("refund", "[1, 2]")))[1] is None
    assert _call_of(ToolApprovalItem(AGENT, call("refund", "x" * 40_000)))[1] is None


async def test_reviewers_find_and_decide_the_agents_approvals_as_any_others(
    client: Client, task_queue: str
) -> None:
    """The reviewer's side (what `hitl pending` and `hitl reject` use) with its own
    client, the project's pydantic converter, against the SDK's worker."""
    from hitl.models import RejectDecision
    from hitl.reviews import Reviews

    reviews = Reviews(client, signer=None)
    one = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(one, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1")
            [record] = await wait_pending(handle)
            deadline = asyncio.get_running_loop().time() + 20
            while not [p for p in await reviews.pending() if p.id == record.id]:
                assert asyncio.get_running_loop().time() < deadline, "not listed as pending"
                await asyncio.sleep(0.2)
            [listed] = [p for p in await reviews.pending() if p.id == record.id]
            assert listed.summary == "refund 50 EUR on order A1" and listed.tool == "refund"
            outcome = await reviews.decide(
                RejectDecision(approval_id=record.id, reviewer="dana", reason="ask finance"),
                workflow_id=handle.id,
            )
            assert outcome.applied
            answer = await asyncio.wait_for(handle.result(), 30)
    [message] = tool_messages(fake.requests[-1])
    assert message["content"] == "Rejected by the reviewer: ask finance"
    assert answer.approvals == [f"{record.id} rejected"]


def test_the_docs_show_the_example_as_it_runs() -> None:
    """Every code block of the guide's section is in the example that
    `test_the_example_runs_offline_as_make_runs_it` runs."""
    import re

    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "integrations.md").read_text()
    section = text.split("## OpenAI Agents SDK", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    sources = "\n".join(p.read_text() for p in (root / "examples" / "openai_agents").glob("*.py"))
    assert len(blocks) >= 6
    for block in blocks:
        assert block in sources, f"not in examples/openai_agents:\n{block}"


async def test_a_call_the_reviewer_rejected_is_not_asked_about_again(
    client: Client, task_queue: str
) -> None:
    ask = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    again = completion(
        "Trying again.", ("refund", {"order_id": "A1", "amount_eur": 50}), call_prefix="retry"
    )
    with FakeOpenAI(scripted(ask, again, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1")
            [record] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="no"))
            answer = await asyncio.wait_for(handle.result(), 30)
            assert len(await approvals(handle)) == 1
    [_, retried] = tool_messages(fake.requests[-1])
    assert retried["content"] == "Rejected: the same call was rejected earlier in this run (no)."
    assert answer.approvals == [f"{record.id} rejected", f"{record.id} rejected"]


async def test_where_decisions_must_be_signed_an_unsigned_one_is_refused(
    client: Client, task_queue: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hitl.models import ApproveDecision
    from hitl.reviewers import add_reviewer, decode_key, new_key
    from hitl.reviews import Reviews

    key = new_key()
    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "alice")
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{key}")
    one = completion("Refunding A1.", ("refund", {"order_id": "A1", "amount_eur": 50}))
    with FakeOpenAI(scripted(one, final)) as fake:
        async with agent_worker(client, fake, task_queue) as own:
            handle = await start(own, task_queue, "refund A1")
            [record] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "alice"))
            [refused] = await wait_decisions(handle, record.id, 1)
            assert "unsigned" in (refused.refusal or "")
            await wait_pending(handle)
            signed = Reviews(client, signer=("api", decode_key(key)))
            outcome = await signed.decide(
                ApproveDecision(approval_id=record.id, reviewer="alice"), workflow_id=handle.id
            )
            assert outcome.applied
            answer = await asyncio.wait_for(handle.result(), 30)
    assert answer.approvals == [f"{record.id} approved"]
    assert tool_messages(fake.requests[-1])[0]["content"] == "refunded 50 EUR on order A1"


# --- hitl tools (the built-in toolkits) as the agent's tools ------------------------------


class LoseFirstToolResult(Interceptor):
    """The worker dies after the approved tool ran, before it reported: Temporal retries."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _LosingTool(next, self)


class _LosingTool(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: LoseFirstToolResult) -> None:
        super().__init__(next)
        self.owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        from temporalio import activity

        result = await super().execute_activity(input)
        info = activity.info()
        if info.activity_type == contract.ACTIVITY_RUN_TOOL and input.args:
            request = input.args[0]
            tool = getattr(getattr(request, "action", None), "tool", None)
            if tool == "delete_files":
                self.owner.attempts.append(info.attempt)
                if info.attempt == 1:
                    raise RuntimeError("the result was lost on the way back")
        return result


@asynccontextmanager
async def files_worker(
    client: Client, fake: FakeOpenAI, task_queue: str, interceptors: list[Any] | None = None
) -> AsyncIterator[Client]:
    own = Client(
        client.service_client,
        namespace=client.namespace,
        plugins=[agents_plugin(fake), HitlPlugin(tools=["builtin"])],
    )
    async with Worker(
        own,
        task_queue=task_queue,
        workflows=[FilesAgentWorkflow],
        interceptors=interceptors or [],
    ):
        yield own


OLD_LOGS_ASKED = "delete the logs older than a week"


def delete_what_was_found(body: dict[str, Any]) -> dict[str, Any]:
    """The model's second turn: delete exactly what `find_files` returned."""
    [found] = tool_messages(body)
    paths = [item["path"] for item in json.loads(found["content"])["files"]]
    return completion("Deleting them.", ("delete_files", {"paths": paths}), call_prefix="del")


async def test_builtin_tools_offered_to_the_agent_ask_once_with_the_toolkits_preview_and_run_once(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    from hitl.models import ApproveDecision
    from hitl.reviews import Reviews
    from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs

    workspace = make_logs(tmp_path / "ws")
    find = completion("Looking.", ("find_files", {"pattern": "*.log", "older_than_days": 7}))
    losing = LoseFirstToolResult()
    reviews = Reviews(client, signer=None)
    with FakeOpenAI(scripted(find, delete_what_was_found, final)) as fake:
        async with files_worker(client, fake, task_queue, [losing]) as own:
            handle = await own.start_workflow(
                FilesAgentWorkflow.run,
                FilesJob(workspace=str(workspace), request=OLD_LOGS_ASKED),
                id=f"oai-files-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
            [record] = await wait_pending(handle)
            # Only the deletion is asked about (find_files is read-only), with the
            # toolkit's own preview: the files, as they are on disk.
            assert record.action_json.tool == "delete_files"
            assert sorted(record.action_json.args["paths"]) == sorted(OLD_LOGS)
            assert record.preview.summary.startswith("delete 3 files (")
            assert all(name in record.preview.details for name in OLD_LOGS)
            assert record.context.original_request == OLD_LOGS_ASKED
            assert record.args_schema is not None and "paths" in record.args_schema["properties"]
            deadline = asyncio.get_running_loop().time() + 20
            while not [p for p in await reviews.pending() if p.id == record.id]:
                assert asyncio.get_running_loop().time() < deadline, "not listed as pending"
                await asyncio.sleep(0.2)
            [listed] = [p for p in await reviews.pending() if p.id == record.id]
            assert listed.tool == "delete_files" and listed.summary == record.preview.summary
            assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
            outcome = await reviews.decide(
                ApproveDecision(approval_id=record.id, reviewer="dana"), workflow_id=handle.id
            )
            assert outcome.applied
            answer = await asyncio.wait_for(handle.result(), 60)
            [done] = await approvals(handle)
    assert losing.attempts == [1, 2], "the tool's activity was retried"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    assert done.status.value == "approved" and done.executed_at is not None
    # The model was offered the tools' own schemas, not strict (optional arguments stay
    # optional), and read what the deletion did.
    offered = {t["function"]["name"]: t["function"] for t in fake.requests[0]["tools"]}
    assert set(offered) == {"find_files", "delete_files"}
    assert "required" not in offered["find_files"]["parameters"]
    assert not offered["delete_files"].get("strict")
    # The retry got the first attempt's result back (a second deletion would have found
    # the files already absent): deleted once.
    deleted = {m["tool_call_id"]: m["content"] for m in tool_messages(fake.requests[-1])}
    assert sorted(json.loads(deleted["del_0"])["deleted"]) == sorted(OLD_LOGS)
    assert answer.startswith("Done: ")


async def test_a_rejected_builtin_call_leaves_the_files_and_the_model_reads_the_reason(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs

    workspace = make_logs(tmp_path / "ws")
    delete = completion("Deleting.", ("delete_files", {"paths": OLD_LOGS}), call_prefix="del")
    with FakeOpenAI(scripted(delete, final)) as fake:
        async with files_worker(client, fake, task_queue) as own:
            handle = await own.start_workflow(
                FilesAgentWorkflow.run,
                FilesJob(workspace=str(workspace), request=OLD_LOGS_ASKED),
                id=f"oai-files-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
            )
            [record] = await wait_pending(handle)
            await handle.signal(
                contract.SIGNAL_REJECT, decision(record.id, "bob", reason="keep them for audit")
            )
            answer = await asyncio.wait_for(handle.result(), 60)
            [done] = await approvals(handle)
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
    assert done.status.value == "rejected" and done.executed_at is None
    [message] = tool_messages(fake.requests[-1])
    assert message["content"].startswith("Error: REJECTED by bob: keep them for audit.")
    assert answer.startswith("Done: Error: REJECTED by bob")


def test_a_hitl_tool_is_a_plain_function_tool_and_the_model_reads_its_result() -> None:
    from typing import cast

    from agents import FunctionTool

    from hitl.gate import ApprovalGate
    from hitl.gated_tools import GatedTools, ToolCallOptions
    from hitl.integrations.openai_agents import function_tools, tool_output
    from hitl.models import ToolDescriptor, ToolResult

    schema = {
        "type": "object",
        "properties": {"pattern": {"type": "string", "default": "*"}},
        "additionalProperties": False,
    }
    descriptor = ToolDescriptor(
        name="find_files",
        description="Find files.",
        parameters=schema,
        digest="d",
        approval="never",
    )
    gated = GatedTools(cast(ApprovalGate, None), [descriptor], ToolCallOptions())
    [tool] = function_tools(gated)
    assert isinstance(tool, FunctionTool)
    # The gate asks inside the call: the SDK must not ask too.
    assert tool.needs_approval is False and tool.strict_json_schema is False
    assert tool.params_json_schema == schema and tool.params_json_schema is not schema
    assert tool_output(ToolResult(ok=True, output={"deleted": ["a"]})) == '{"deleted": ["a"]}'
    assert tool_output(ToolResult(ok=True, output="plain")) == "plain"
    assert tool_output(ToolResult(ok=True, summary="nothing to say")) == "nothing to say"
    partial = ToolResult(ok=False, output={"kept": ["b"]}, error="1 was not deleted")
    assert tool_output(partial) == 'Error: 1 was not deleted\n{"kept": ["b"]}'
    long = tool_output(ToolResult(ok=True, output="x" * 50_000))
    assert len(long) == 16_000 and long.endswith("more characters not shown]")
