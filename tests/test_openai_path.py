"""The OpenAI code path: the real `openai` SDK against a local OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError

from hitl import contract
from hitl.models import ModelSettings, RunState
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in
from tests.fake_openai import FakeOpenAI, cleanup_model, completion, tool_messages
from tests.helpers import decision, start_run, wait_pending

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker (in this process) reads the key; it never travels in workflow history.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local")


def openai_model(fake: FakeOpenAI) -> ModelSettings:
    return ModelSettings(provider="openai", name="fake-gpt-1", base_url=fake.base_url)


async def test_the_agent_plans_through_the_openai_sdk_and_waits_for_approval(
    client: Client, task_queue: str, workspace: Path
) -> None:
    with FakeOpenAI(cleanup_model) as fake:
        handle = await start_run(client, task_queue, workspace, model=openai_model(fake))
        [record] = await wait_pending(handle)
        assert record.context.reasoning == "These 3 logs are older than 7 days; deleting them."
        assert sorted(record.action_json.args["paths"]) == sorted(OLD_LOGS)
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id))
        result = await handle.result()

    assert result.answer == "Final: I deleted them"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    assert result.evidence["model"]["answered_by"] == ["fake-gpt-1"]
    first = fake.requests[0]
    assert first["model"] == "fake-gpt-1"
    headers = {name.lower(): value for name, value in fake.headers[0].items()}
    assert headers["authorization"] == "Bearer sk-test-local"
    names = {tool["function"]["name"] for tool in first["tools"]}
    assert names == {
        "find_files",
        "read_file",
        "delete_files",
        "write_file",
        "run_command",
        "send_email",
    }
    delete = next(t for t in first["tools"] if t["function"]["name"] == "delete_files")
    assert delete["function"]["parameters"]["properties"]["paths"]["type"] == "array"
    assert delete["function"]["parameters"]["required"] == ["paths"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    # The conversation carries the assistant's tool calls and each tool's result.
    last = fake.requests[-1]
    assistant = [m for m in last["messages"] if m["role"] == "assistant"]
    assert assistant[1]["tool_calls"][0]["function"]["name"] == "delete_files"
    results = tool_messages(last)
    assert [m["tool_call_id"] for m in results] == ["call_0", "call_delete_0"]
    assert '"ok": true' in results[-1]["content"]


async def test_several_tool_calls_in_one_turn_each_get_an_approval(
    client: Client, task_queue: str, workspace: Path
) -> None:
    def model(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not tool_messages(body):
            return 200, completion(
                "Two separate deletions.",
                ("delete_files", {"paths": [OLD_LOGS[0]]}),
                ("delete_files", {"paths": [OLD_LOGS[1]]}),
            )
        return 200, completion("Done: " + " | ".join(m["content"] for m in tool_messages(body)))

    with FakeOpenAI(model) as fake:
        handle = await start_run(client, task_queue, workspace, model=openai_model(fake))
        first, second = await wait_pending(handle, count=2)
        await handle.signal(contract.SIGNAL_REJECT, decision(first.id, reason="keep this one"))
        await handle.signal(contract.SIGNAL_APPROVE, decision(second.id))
        result = await handle.result()
    assert "keep this one" in result.answer
    remaining = files_in(workspace)
    assert (first.action_json.args["paths"][0] in remaining) and (
        second.action_json.args["paths"][0] not in remaining
    )


async def test_a_server_error_is_retried_by_temporal_not_by_the_sdk(
    client: Client, task_queue: str, workspace: Path
) -> None:
    calls = {"n": 0}

    def flaky(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 1:
            return 503, {"error": {"message": "overloaded", "type": "server_error"}}
        return 200, completion("Nothing to do here.")

    with FakeOpenAI(flaky) as fake:
        handle = await start_run(client, task_queue, workspace, model=openai_model(fake))
        result = await handle.result()
    assert result.state is RunState.COMPLETED and result.answer == "Nothing to do here."
    assert len(fake.requests) == 2, "one HTTP call per activity attempt (max_retries=0)"


async def test_a_refused_api_key_fails_the_run_with_a_clear_reason(
    client: Client, task_queue: str, workspace: Path
) -> None:
    def unauthorized(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_key"}}

    with FakeOpenAI(unauthorized) as fake:
        handle = await start_run(client, task_queue, workspace, model=openai_model(fake))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    message = str(failure.value.cause)
    assert "the model could not be asked at step 1" in message
    assert len(fake.requests) == 1, "an authentication error is not retried"
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
