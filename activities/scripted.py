"""An offline scripted model for demos and tests. It never pretends to be an LLM.

Given a fixed script (`ModelSettings.script`) it plays those turns in order. Without
one it plans the guide's kind of task, "Delete all <kind> files older than N days",
the way a careful model would: find the files, propose deleting exactly those, then
report what happened (including a rejection).
"""

from __future__ import annotations

import json
import re
from typing import Any

from hitl.models import (
    SCRIPTED_BANNER,
    SCRIPTED_MODEL_NAME,
    AssistantTurn,
    ChatMessage,
    LlmRequest,
    ToolCall,
)

_CLEANUP = re.compile(
    r"delete\s+(?:all\s+)?(?:the\s+)?(?P<kind>[\w.-]+)\s+files?\s+older\s+than\s+"
    r"(?P<days>\d+(?:\.\d+)?)\s+days?",
    re.IGNORECASE,
)
_EXTENSIONS = {"log": "log", "logs": "log", "temp": "tmp", "tmp": "tmp", "backup": "bak"}


def _turn(content: str, *calls: tuple[str, dict[str, Any]], step: int) -> AssistantTurn:
    return AssistantTurn(
        content=f"{SCRIPTED_BANNER} {content}",
        tool_calls=[
            ToolCall(id=f"call_{step}_{index}", name=name, arguments=json.dumps(args))
            for index, (name, args) in enumerate(calls)
        ],
        model=SCRIPTED_MODEL_NAME,
        scripted=True,
    )


def _last_tool_results(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    results = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        try:
            results.append(json.loads(message.content or "{}"))
        except json.JSONDecodeError:
            results.append({"ok": False, "error": message.content})
    return list(reversed(results))


def _last_calls(messages: list[ChatMessage]) -> list[ToolCall]:
    for message in reversed(messages):
        if message.role == "assistant":
            return message.tool_calls
    return []


def scripted_turn(request: LlmRequest) -> AssistantTurn:
    messages = request.messages
    # The conversation may have been trimmed, so the run's own step count is the truth.
    step = request.step - 1 if request.step else sum(1 for m in messages if m.role == "assistant")
    script = request.model.script
    if script is not None:
        if step < len(script):
            planned = script[step]
            return AssistantTurn(
                content=f"{SCRIPTED_BANNER} {planned.content}".strip(),
                tool_calls=planned.tool_calls,
                model=SCRIPTED_MODEL_NAME,
                scripted=True,
            )
        outcomes = _last_tool_results(messages)
        return _turn(f"Script finished. Last tool results: {json.dumps(outcomes)}", step=step)
    return _plan_cleanup(messages, step)


def _plan_cleanup(messages: list[ChatMessage], step: int) -> AssistantTurn:
    task = next((m.content or "" for m in messages if m.role == "user"), "")
    match = _CLEANUP.search(task)
    if match is None:
        return _turn(
            "I can only plan tasks like 'Delete all log files older than 7 days'. Set "
            "OPENAI_API_KEY (and optionally OPENAI_BASE_URL, HITL_MODEL) to use a real model.",
            step=step,
        )
    kind = match["kind"].lower()
    extension = _EXTENSIONS.get(kind, kind)
    days = float(match["days"])
    calls = _last_calls(messages)
    results = _last_tool_results(messages)
    if not calls:
        return _turn(
            f"First I list the *.{extension} files older than {days:g} days.",
            ("find_files", {"pattern": f"*.{extension}", "older_than_days": days}),
            step=step,
        )
    last = calls[-1].name
    result = results[-1] if results else {}
    if last == "find_files":
        files = (result.get("output") or {}).get("files", [])
        if not files:
            return _turn(f"There are no *.{extension} files older than {days:g} days.", step=step)
        total = sum(item["size"] for item in files)
        return _turn(
            f"{len(files)} {kind} file(s) are older than {days:g} days ({total} bytes). I "
            "propose deleting exactly these; newer files are kept.",
            ("delete_files", {"paths": [item["path"] for item in files]}),
            step=step,
        )
    if last == "delete_files":
        if result.get("ok"):
            output = result.get("output") or {}
            deleted = output.get("result", output).get("deleted", [])
            return _turn(f"Deleted {len(deleted)} file(s): {', '.join(deleted)}.", step=step)
        return _turn(
            f"The deletion was not carried out: {result.get('error')} Nothing was deleted, "
            "and I will not propose the same deletion again.",
            step=step,
        )
    return _turn(f"Done. Last result: {json.dumps(result)}", step=step)
