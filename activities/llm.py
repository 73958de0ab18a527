"""The LLM step: one Chat Completions call with tools, or the offline scripted model.

Every way the model endpoint can fail ends in an `ApplicationError` that says what
happened and whether a retry can help; Temporal's retry policy is the one retry
mechanism (`AsyncOpenAI(max_retries=0)`). What the model returns is bounded and
redacted before it leaves the activity, since it is stored in workflow history and
sent back to the model on every later turn.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.scripted import scripted_turn
from hitl import contract
from hitl.activities.heartbeat import heartbeating
from hitl.models import AssistantTurn, ChatMessage, LlmRequest, ToolCall
from hitl.secrets import redact_model, redact_text
from hitl.text import clip

log = structlog.get_logger("hitl.llm")

TIMEOUT_ENV = "HITL_LLM_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 60.0
"""How long one request to the model may take (`HITL_LLM_TIMEOUT`, seconds). It must be
shorter than the activity's start-to-close timeout, so a hanging endpoint fails the
attempt with a message saying so, not as an anonymous activity timeout; when it is not,
`request_timeout` uses 80% of the start-to-close instead."""

MAX_RETRY_AFTER_SECONDS = 300.0
"""A server asking to wait longer than this (429 Retry-After) is waited on this long;
the run's retry policy then decides whether to go on."""

MAX_CONTENT_BYTES = 32 * 1024
MAX_TOOL_CALLS = 64
MAX_ARGUMENTS_BYTES = 64 * 1024
MAX_TOOL_NAME_CHARS = 128
MAX_CALL_ID_CHARS = 128
MAX_MODEL_NAME_CHARS = 128

# A 4xx other than these says the request itself is wrong (bad request, bad key, no
# such model, forbidden): retrying the identical request can't change the answer.
_RETRYABLE_4XX = {408, 409, 425, 429}
_STATUS_HINT = {
    400: "the server rejected the request as invalid",
    401: "the API key was refused: check OPENAI_API_KEY on the worker",
    403: "the API key may not use this model or endpoint",
    404: "no such model or endpoint: check the model name and OPENAI_BASE_URL",
    413: "the conversation is too large for the server",
    422: "the server could not process the request",
}

_clients: dict[tuple[str | None, str], AsyncOpenAI] = {}


BASE_URLS_ENV = "HITL_MODEL_BASE_URLS"
"""Further model endpoints a run may name (comma-separated), besides OPENAI_BASE_URL."""


def allowed_base_url(asked: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The endpoint a run may use: the worker's own, or one the worker lists.

    A run's input names it, but the worker's API key goes with every request, so an
    endpoint the worker doesn't know would receive that key: refused.
    """
    environ = os.environ if environ is None else environ
    own = environ.get("OPENAI_BASE_URL") or None
    if not asked or asked.rstrip("/") == (own or "").rstrip("/"):
        return own
    if any(_covers(entry.strip(), asked) for entry in environ.get(BASE_URLS_ENV, "").split(",")):
        return asked
    raise ApplicationError(
        f"the run asks for the model endpoint {clip(asked, 200)!r}, which this worker does not "
        f"allow: the worker's API key would be sent there. Use the worker's own endpoint "
        f"(OPENAI_BASE_URL), or list it in {BASE_URLS_ENV} on the worker",
        type="ConfigurationError",
        non_retryable=True,
    )


def _covers(entry: str, asked: str) -> bool:
    """`entry` is a full URL (that one) or `scheme://host` (any port and path there),
    compared on the parsed URL, so `http://host:1@elsewhere/` never passes for `host`."""
    if not entry:
        return False
    try:
        want, got = urllib.parse.urlsplit(entry), urllib.parse.urlsplit(asked)
        got_port = got.port
    except ValueError:
        return False
    if got.username is not None or got.password is not None or not got.hostname:
        return False
    if (want.scheme, want.hostname) != (got.scheme, got.hostname):
        return False
    if want.port is None and want.path in ("", "/"):
        return True
    return (want.port, want.path.rstrip("/")) == (got_port, got.path.rstrip("/"))


def _client(base_url: str | None) -> AsyncOpenAI:
    base = allowed_base_url(base_url)
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
        # Temporal's retry policy is the one retry mechanism; the timeout is per request.
        _clients[cache_key] = AsyncOpenAI(api_key=key, base_url=base, max_retries=0)
    return _clients[cache_key]


def request_timeout(
    start_to_close: timedelta | None, environ: dict[str, str] | None = None
) -> float:
    """Seconds one model request may take: HITL_LLM_TIMEOUT (default 60), kept under
    80% of the activity's start-to-close so the SDK's timeout fires first."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "").strip()
    seconds = DEFAULT_TIMEOUT_SECONDS
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            raise ApplicationError(
                f"{TIMEOUT_ENV}={raw!r} on the worker is not a positive number of seconds: "
                f"set it to e.g. 60, or unset it for the default "
                f"({DEFAULT_TIMEOUT_SECONDS:g} s)",
                type="ConfigurationError",
                non_retryable=True,
            )
    if start_to_close:
        seconds = min(seconds, 0.8 * start_to_close.total_seconds())
    return seconds


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


def _retry_after(error: openai.APIStatusError) -> timedelta | None:
    headers = error.response.headers
    millis = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    seconds: float | None = None
    try:
        if millis is not None:
            seconds = float(millis) / 1000
        elif value is not None:
            seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None and value:
        try:  # the other form RFC 9110 allows: an HTTP date
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = None
    if seconds is None or seconds != seconds:  # NaN
        return None
    return timedelta(seconds=min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS))


def _error(message: str, error_type: str, **options: Any) -> ApplicationError:
    # The server's words and the URL are echoed into the message, which Temporal keeps
    # in history and shows in the run's failure: no secret may be among them.
    return ApplicationError(redact_text(message), type=error_type, **options)


def _failure(error: openai.OpenAIError, where: str, timeout: float) -> ApplicationError:
    """The SDK's error as an ApplicationError saying what happened and if a retry helps."""
    detail = str(error)
    if isinstance(error, openai.APITimeoutError):
        return _error(
            f"the model server at {where} did not answer within {timeout:g} s ({TIMEOUT_ENV})",
            "ModelTimeout",
        )
    if isinstance(error, openai.APIConnectionError):
        cause = str(error.__cause__ or error)
        return _error(
            f"could not reach the model server at {where}: {cause} "
            f"(check OPENAI_BASE_URL and that the server is up)",
            "ModelUnreachable",
        )
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        if status == 429 and error.code == "insufficient_quota":
            # OpenAI's "you exceeded your current quota": waiting doesn't refill it.
            return _error(
                f"the model server at {where} says the account has no quota left "
                f"(HTTP 429): {detail}; not retried: add credit or use another key",
                "ModelQuotaExhausted",
                non_retryable=True,
            )
        if status == 429:
            delay = _retry_after(error)
            wait = f"; it asked to wait {delay.total_seconds():g} s" if delay else ""
            return _error(
                f"the model server at {where} is rate limiting (HTTP 429): {detail}{wait}",
                "ModelRateLimited",
                next_retry_delay=delay,
            )
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            hint = _STATUS_HINT.get(status, "the server refused the request")
            return _error(
                f"the model server at {where} refused the request (HTTP {status}, "
                f"{type(error).__name__}): {hint}: {detail}; not retried",
                type(error).__name__,
                non_retryable=True,
            )
        return _error(
            f"the model server at {where} failed (HTTP {status}): {detail}",
            type(error).__name__,
        )
    return _error(
        f"the model request to {where} failed ({type(error).__name__}): {detail}",
        type(error).__name__,
    )


def _malformed(where: str, what: str, *, retryable: bool) -> ApplicationError:
    return _error(
        f"the model server at {where} sent a malformed answer: {what}"
        + (
            ""
            if retryable
            else "; not retried: this server's answers don't follow the Chat Completions "
            "format (check OPENAI_BASE_URL and the model)"
        ),
        "MalformedModelResponse",
        non_retryable=not retryable,
    )


def _utf8_clip(text: str, limit: int) -> str:
    """`clip` to at most `limit` UTF-8 bytes (clip counts characters)."""
    chars = limit
    while chars > 0:
        clipped = clip(text, chars)
        size = len(clipped.encode())
        if size <= limit:
            return clipped
        chars = min(chars - 1, chars * limit // size)
    # No room even for clip's note: bytes, cut at a character boundary.
    return text.encode()[:limit].decode(errors="ignore")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_valid_unicode(item) for item in value]
    return value


def _valid_unicode_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {_valid_unicode(key): _valid_unicode(value) for key, value in pairs}


def _parse_turn(body: str, where: str, requested_model: str) -> AssistantTurn:
    """The assistant turn in a Chat Completions body, bounded, or a clear error.

    A body that isn't JSON or has no message is retried: gateways answer 200 with an
    HTML page or a truncated body when overloaded, and the next attempt usually gets a
    real answer. A message whose tool calls break the format (arguments not a string,
    an unknown call type, no function name) is not: a server that speaks another
    dialect answers that way every time, and retrying only delays the message.
    """
    try:
        # A lone surrogate escape (\udc9b) would decode into text that can't be encoded
        # again: the turn could not leave the activity. Such escapes become U+FFFD.
        data = json.loads(body, object_pairs_hook=_valid_unicode_object)
    except json.JSONDecodeError as error:
        what = f"not JSON ({error}): {clip(body, 200)!r}"
        raise _malformed(where, what, retryable=True) from None
    if isinstance(data, str):
        data = _valid_unicode(data)
    if not isinstance(data, dict):
        raise _malformed(where, f"not a JSON object: {clip(body, 200)!r}", retryable=True)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        said = data.get("error")
        said = f"; it said: {clip(json.dumps(said), 300)}" if said else ""
        raise _malformed(where, f"no choices in the answer{said}", retryable=True)
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise _malformed(where, "the first choice has no message", retryable=True)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed(where, f"content is a {type(content).__name__}", retryable=False)
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _malformed(where, "tool_calls is not a list", retryable=False)

    notes: list[str] = []
    if len(raw_calls) > MAX_TOOL_CALLS:
        notes.append(
            f"[hitl: the model proposed {len(raw_calls)} tool calls in one turn; only the "
            f"first {MAX_TOOL_CALLS} were kept and the other {len(raw_calls) - MAX_TOOL_CALLS} "
            f"were dropped unrun. Propose the rest in a later turn if still needed.]"
        )
    calls: list[ToolCall] = []
    for index, raw in enumerate(raw_calls[:MAX_TOOL_CALLS]):
        calls.append(_parse_call(raw, index, where, notes))

    model = data.get("model") if isinstance(data.get("model"), str) else None
    note = "\n".join(notes)
    room = MAX_CONTENT_BYTES - (len(note.encode()) + 1 if note else 0)
    text = _utf8_clip(content or "", room)
    return AssistantTurn(
        content=f"{text}\n{note}" if note and text else text or note,
        tool_calls=calls,
        model=clip(model or requested_model, MAX_MODEL_NAME_CHARS),
    )


def _parse_call(raw: Any, index: int, where: str, notes: list[str]) -> ToolCall:
    if not isinstance(raw, dict):
        raise _malformed(where, f"tool call {index} is not an object", retryable=False)
    kind = raw.get("type", "function")
    function = raw.get("function")
    if kind != "function" or not isinstance(function, dict):
        raise _malformed(
            where,
            f"tool call {index} is of type {clip(str(kind), 40)!r}; only 'function' calls "
            f"with a 'function' object are supported",
            retryable=False,
        )
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise _malformed(where, f"tool call {index} has no function name", retryable=False)
    arguments = function.get("arguments")
    if arguments is None:
        arguments = "{}"
    if not isinstance(arguments, str):
        raise _malformed(
            where,
            f"the arguments of tool call {index} ({clip(name, 60)!r}) are a "
            f"{type(arguments).__name__}, not a JSON string",
            retryable=False,
        )
    size = len(arguments.encode())
    if size > MAX_ARGUMENTS_BYTES:
        # Not valid JSON on purpose: the workflow refuses the call as unparseable and
        # tells the model, instead of running a truncated (and so different) action.
        arguments = (
            f"<arguments not kept: {size:,} bytes, more than the limit of "
            f"{MAX_ARGUMENTS_BYTES:,}; send smaller arguments>"
        )
        notes.append(
            f"[hitl: the arguments of tool call {index} ({clip(name, 60)}) were {size:,} "
            f"bytes, more than the {MAX_ARGUMENTS_BYTES:,} allowed; the call was not run.]"
        )
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS:
        # Any id we send back consistently works: the conversation pairs the assistant's
        # call with the tool's result by this id, and both carry ours.
        seed = call_id if isinstance(call_id, str) else f"{index}:{name}"
        call_id = "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
    return ToolCall(id=call_id, name=clip(name, MAX_TOOL_NAME_CHARS), arguments=arguments)


async def openai_turn(request: LlmRequest) -> AssistantTurn:
    client = _client(request.model.base_url)
    where = str(client.base_url).rstrip("/")
    timeout = request_timeout(activity.info().start_to_close_timeout)
    # What a tool returned went through redaction at its activity; this catches
    # anything that didn't (a tool built before that, a secret set since).
    outgoing = redact_model(request)
    try:
        raw = await heartbeating(
            client.chat.completions.with_raw_response.create(
                model=outgoing.model.name,
                messages=[to_openai(message) for message in outgoing.messages],  # type: ignore[misc]
                tools=outgoing.tools,  # type: ignore[arg-type]
                timeout=timeout,
            )
        )
        body = raw.http_response.text
    except openai.OpenAIError as error:
        # `from None`: the SDK's exception would travel as the failure's cause, with
        # the server's unredacted words in it.
        raise _failure(error, where, timeout) from None
    return redact_model(_parse_turn(body, where, request.model.name))


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
