"""The OpenAI code path: the real `openai` SDK against a local OpenAI-compatible server."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.llm import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_CONTENT_BYTES,
    MAX_TOOL_CALLS,
    llm_next_step,
    request_timeout,
)
from hitl import contract
from hitl.activities import heartbeat
from hitl.models import AssistantTurn, ChatMessage, LlmRequest, ModelSettings, RunState
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in
from tests.fake_openai import (
    HANG,
    FakeOpenAI,
    Raw,
    cleanup_model,
    completion,
    refused_base_url,
    tool_calls_completion,
    tool_messages,
)
from tests.helpers import decision, start_run, wait_pending


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker (in this process) reads the key; it never travels in workflow history.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local")
    # The fake servers listen on loopback ports: the worker allows that host, any port.
    monkeypatch.setenv("HITL_MODEL_BASE_URLS", "http://127.0.0.1")


def openai_model(fake: FakeOpenAI) -> ModelSettings:
    return ModelSettings(provider="openai", name="fake-gpt-1", base_url=fake.base_url)


@pytest.mark.usefixtures("worker")
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


@pytest.mark.usefixtures("worker")
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


@pytest.mark.usefixtures("worker")
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


@pytest.mark.usefixtures("worker")
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


# --- the LLM activity against every way the endpoint can fail ---------------------------
# Through the real SDK and the activity itself (ActivityEnvironment); no worker needed.

SECRET = "sk-test-local"  # what the api_key fixture puts on the "worker"


def llm_env(heartbeats: list[Any] | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    # The workflow gives the LLM activity 3 minutes; the SDK timeout must fit in it.
    env.info = dataclasses.replace(env.info, start_to_close_timeout=timedelta(minutes=3))
    if heartbeats is not None:
        env.on_heartbeat = lambda *details: heartbeats.append(details)
    return env


def llm_request(base_url: str, *messages: ChatMessage) -> LlmRequest:
    return LlmRequest(
        model=ModelSettings(provider="openai", name="fake-gpt-1", base_url=base_url),
        messages=list(messages) or [ChatMessage(role="user", content="tidy up")],
        tools=[],
    )


async def ask(responder: Any) -> AssistantTurn:
    with FakeOpenAI(responder) as fake:
        return await llm_env().run(llm_next_step, llm_request(fake.base_url))


async def failure_of(responder: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ask(responder)
    return caught.value


def answer(status: int, payload: dict[str, Any]) -> Any:
    return lambda body: (status, payload)


async def test_a_refused_connection_is_retried_and_says_where() -> None:
    url = refused_base_url()
    with pytest.raises(ApplicationError) as caught:
        await llm_env().run(llm_next_step, llm_request(url))
    error = caught.value
    assert not error.non_retryable and error.type == "ModelUnreachable"
    assert f"could not reach the model server at {url}" in str(error)
    assert "OPENAI_BASE_URL" in str(error)


async def test_a_server_error_is_retryable() -> None:
    error = await failure_of(answer(500, {"error": {"message": "boom"}}))
    assert not error.non_retryable
    assert "failed (HTTP 500)" in str(error) and "boom" in str(error)


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("7", 7), ("0.5", 0.5), ("86400", 300), ("Wed, 21 Oct 2015 07:28:00 GMT", 0)],
)
async def test_rate_limiting_is_retried_after_what_the_server_asks(
    retry_after: str, seconds: float
) -> None:
    body = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()
    error = await failure_of(lambda _: Raw(429, body, {"Retry-After": retry_after}))
    assert not error.non_retryable and error.type == "ModelRateLimited"
    assert error.next_retry_delay == timedelta(seconds=seconds)
    assert "rate limiting (HTTP 429): " in str(error) and "slow down" in str(error)


async def test_an_exhausted_quota_is_not_retried() -> None:
    quota = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}
    error = await failure_of(answer(429, quota))
    assert error.non_retryable and error.type == "ModelQuotaExhausted"
    assert "no quota left" in str(error) and "add credit or use another key" in str(error)


@pytest.mark.parametrize("retry_after", ["soon", ""])
async def test_an_unreadable_retry_after_leaves_the_delay_to_the_policy(retry_after: str) -> None:
    body = json.dumps({"error": {"message": "slow down"}}).encode()
    error = await failure_of(lambda _: Raw(429, body, {"Retry-After": retry_after}))
    assert not error.non_retryable and error.next_retry_delay is None


async def test_rate_limiting_without_retry_after_leaves_the_delay_to_the_policy() -> None:
    error = await failure_of(answer(429, {"error": {"message": "slow down"}}))
    assert not error.non_retryable and error.next_retry_delay is None


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, "rejected the request as invalid"),
        (401, "check OPENAI_API_KEY"),
        (403, "may not use this model"),
        (404, "check the model name and OPENAI_BASE_URL"),
        (422, "could not process"),
    ],
)
async def test_a_refused_request_is_not_retried_and_says_what_to_check(
    status: int, hint: str
) -> None:
    error = await failure_of(answer(status, {"error": {"message": "the server's own words"}}))
    assert error.non_retryable
    assert f"refused the request (HTTP {status}" in str(error)
    assert hint in str(error) and "the server's own words" in str(error)


async def test_a_hanging_server_fails_the_attempt_at_the_configured_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HITL_LLM_TIMEOUT", "0.5")
    error = await failure_of(lambda body: HANG)
    assert not error.non_retryable and error.type == "ModelTimeout"
    assert "did not answer within 0.5 s (HITL_LLM_TIMEOUT)" in str(error)


def test_the_request_timeout_fits_inside_the_activity_and_is_configurable() -> None:
    three_minutes = timedelta(minutes=3)
    assert request_timeout(three_minutes, {}) == DEFAULT_TIMEOUT_SECONDS == 60
    assert request_timeout(three_minutes, {"HITL_LLM_TIMEOUT": "90"}) == 90
    # Longer than the activity may run: the SDK must still time out first.
    assert request_timeout(three_minutes, {"HITL_LLM_TIMEOUT": "600"}) == 144
    assert request_timeout(None, {"HITL_LLM_TIMEOUT": "600"}) == 600


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf", "nan"])
def test_a_bad_timeout_setting_is_refused_with_what_to_set(value: str) -> None:
    with pytest.raises(ApplicationError) as caught:
        request_timeout(timedelta(minutes=3), {"HITL_LLM_TIMEOUT": value})
    assert caught.value.non_retryable
    assert f"HITL_LLM_TIMEOUT={value!r}" in str(caught.value)
    assert "set it to e.g. 60" in str(caught.value)


async def test_a_body_that_is_not_json_is_retried_and_shown() -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    error = await failure_of(lambda _: Raw(200, page, content_type="text/html"))
    assert not error.non_retryable and error.type == "MalformedModelResponse"
    assert "sent a malformed answer: not JSON" in str(error) and "502 Bad Gateway" in str(error)


async def test_a_truncated_json_body_is_retried() -> None:
    error = await failure_of(lambda _: Raw(200, b'{"choices": [{"mess'))
    assert not error.non_retryable and "not JSON" in str(error)


async def test_an_answer_without_choices_is_retried_and_says_so() -> None:
    error = await failure_of(answer(200, {"id": "x", "object": "chat.completion", "choices": []}))
    assert not error.non_retryable
    assert "malformed answer: no choices in the answer" in str(error)


def one_call(call: dict[str, Any]) -> Any:
    payload = completion("calling")
    payload["choices"][0]["message"]["tool_calls"] = [call]
    return answer(200, payload)


async def test_tool_call_arguments_that_are_not_a_string_are_refused_at_once() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": {}}}
    error = await failure_of(one_call(call))
    assert error.non_retryable
    assert "the arguments of tool call 0 ('read_file') are a dict, not a JSON string" in str(error)


async def test_a_tool_call_of_unknown_type_is_refused_at_once() -> None:
    error = await failure_of(one_call({"id": "c1", "type": "custom", "custom": {"name": "x"}}))
    assert error.non_retryable
    assert "tool call 0 is of type 'custom'; only 'function' calls" in str(error)


async def test_huge_content_is_clipped_with_a_note() -> None:
    turn = await ask(answer(200, completion("é" * 1_000_000)))
    assert len(turn.content.encode()) <= MAX_CONTENT_BYTES
    assert turn.content.startswith("éé")
    assert turn.content.endswith("more characters not shown]")


async def test_at_most_64_tool_calls_are_kept_and_the_model_is_told() -> None:
    turn = await ask(answer(200, tool_calls_completion(200)))
    assert len(turn.tool_calls) == MAX_TOOL_CALLS == 64
    assert [call.id for call in turn.tool_calls] == [f"call_{index}" for index in range(64)]
    assert turn.content.startswith("200 calls\n")
    assert "proposed 200 tool calls" in turn.content and "other 136 were dropped" in turn.content


async def test_huge_arguments_are_replaced_by_text_the_workflow_cannot_run() -> None:
    payload = completion(
        "writing", ("write_file", {"path": "a.txt", "content": "x" * 200_000}), ("read_file", {})
    )
    turn = await ask(answer(200, payload))
    big, small = turn.tool_calls
    assert len(big.arguments) < 200 and "200,0" in big.arguments and "65,536" in big.arguments
    with pytest.raises(json.JSONDecodeError):
        json.loads(big.arguments)
    assert json.loads(small.arguments) == {}
    assert "the call was not run" in turn.content


async def test_names_and_ids_are_bounded() -> None:
    call = {"id": "i" * 10_000, "type": "function", "function": {"name": "n" * 10_000}}
    turn = await ask(one_call(call))
    [bounded] = turn.tool_calls
    assert len(bounded.name) <= 128 and len(bounded.id) <= 128
    assert bounded.arguments == "{}"


async def test_the_activity_heartbeats_while_it_waits_for_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0.01)
    heartbeats: list[Any] = []
    seen_three = threading.Event()

    def slow(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # Answers once the activity has heartbeaten three times while waiting; if it
        # never does, it answers after 10 s and the assertion below fails.
        seen_three.wait(timeout=10)
        return 200, completion("done")

    env = llm_env(heartbeats)
    env.on_heartbeat = lambda *details: (
        heartbeats.append(details),
        len(heartbeats) >= 3 and seen_three.set(),
    )
    with FakeOpenAI(slow) as fake:
        turn = await env.run(llm_next_step, llm_request(fake.base_url))
    assert turn.content == "done"
    assert seen_three.is_set() and len(heartbeats) >= 3


async def test_secrets_are_redacted_from_the_turn_the_request_and_errors() -> None:
    encoded = base64.b64encode(f"OPENAI_API_KEY={SECRET}\n".encode()).decode()
    leaked = ChatMessage(role="user", content=f"my key is {SECRET}")
    with FakeOpenAI(
        answer(200, completion(f"found {SECRET} and {encoded}", ("send_email", {"k": SECRET})))
    ) as fake:
        turn = await llm_env().run(llm_next_step, llm_request(fake.base_url, leaked))
    assert SECRET not in turn.model_dump_json()
    assert turn.content.startswith("found [redacted:OPENAI_API_KEY] and ")
    assert json.loads(turn.tool_calls[0].arguments) == {"k": "[redacted:OPENAI_API_KEY]"}
    assert fake.requests[0]["messages"][0]["content"] == "my key is [redacted:OPENAI_API_KEY]"

    error = await failure_of(answer(401, {"error": {"message": f"bad key {SECRET}"}}))
    assert SECRET not in str(error) and "bad key [redacted:OPENAI_API_KEY]" in str(error)
    assert error.__cause__ is None, "the SDK's error (unredacted) is not chained"


async def test_text_that_is_not_valid_unicode_from_the_model_is_replaced_not_carried() -> None:
    def surrogate(body: dict[str, Any]) -> Raw:
        text = (
            '{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": '
            '[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", '
            '"content": "bad \\udc9b text"}}]}'
        )
        return Raw(200, text.encode())

    turn = await ask(surrogate)
    assert turn.content.startswith("bad \ufffd text")
    turn.model_dump_json()  # it can be written to history
