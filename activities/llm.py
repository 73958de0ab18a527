"""The LLM step: one Chat Completions call with tools, or the offline scripted model."""

from __future__ import annotations

import os
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.scripted import scripted_turn
from hitl import contract
from hitl.models import AssistantTurn, ChatMessage, LlmRequest, ToolCall

log = structlog.get_logger("hitl.llm")

_clients: dict[tuple[str | None, str], AsyncOpenAI] = {}

# Errors that a retry can't fix: Temporal stops retrying and the run reports them.
_PERMANENT = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.BadRequestError,
    openai.NotFoundError,
    openai.UnprocessableEntityError,
)


def _client(base_url: str | None) -> AsyncOpenAI:
    base = base_url or os.environ.get("OPENAI_BASE_URL") or None
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        if base is None:
            raise ApplicationError(
                "OPENAI_API_KEY is not set on the worker: set it (or OPENAI_BASE_URL for a "
                "local OpenAI-compatible server), or start the run with --model scripted",
                type="ConfigurationError",
                non_retryable=True,
            )
        key = "unused"  # local servers (vLLM, Ollama) take any key
    cache_key = (base, key)
    if cache_key not in _clients:
        # Temporal's retry policy is the one retry mechanism.
        _clients[cache_key] = AsyncOpenAI(api_key=key, base_url=base, max_retries=0, timeout=120)
    return _clients[cache_key]


def to_openai(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    return wire


async def openai_turn(request: LlmRequest) -> AssistantTurn:
    client = _client(request.model.base_url)
    extra: dict[str, Any] = {}
    if request.model.temperature is not None:
        extra["temperature"] = request.model.temperature
    try:
        response = await client.chat.completions.create(
            model=request.model.name,
            messages=[to_openai(message) for message in request.messages],  # type: ignore[misc]
            tools=request.tools,  # type: ignore[arg-type]
            **extra,
        )
    except _PERMANENT as error:
        raise ApplicationError(
            f"the model server refused the request ({type(error).__name__}): {error}",
            type=type(error).__name__,
            non_retryable=True,
        ) from error
    if not response.choices:
        raise ApplicationError("the model server answered with no choices")
    message = response.choices[0].message
    calls = [
        ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments or "{}")
        for call in (message.tool_calls or [])
        if call.type == "function"
    ]
    usage = response.usage.model_dump(exclude_none=True) if response.usage else {}
    return AssistantTurn(
        content=message.content or "",
        tool_calls=calls,
        model=response.model or request.model.name,
        usage={name: value for name, value in usage.items() if isinstance(value, int)},
    )


@activity.defn(name=contract.ACTIVITY_LLM)
async def llm_next_step(request: LlmRequest) -> AssistantTurn:
    """Ask the model for its next step: a final answer or tool calls."""
    if request.model.provider == "scripted":
        turn = scripted_turn(request)
    else:
        turn = await openai_turn(request)
    log.bind(workflow_id=activity.info().workflow_id).info(
        "llm.turn",
        model=turn.model,
        scripted=turn.scripted,
        tool_calls=[call.name for call in turn.tool_calls],
    )
    return turn
