"""Everything that touches the world: the LLM, the workspace, commands, email, notifications."""

from collections.abc import Callable
from typing import Any

from activities.llm import llm_next_step
from activities.tools import notify_approval, preview_tool, run_tool

ALL_ACTIVITIES: list[Callable[..., Any]] = [llm_next_step, preview_tool, run_tool, notify_approval]
TOOL_ACTIVITIES: list[Callable[..., Any]] = [preview_tool, run_tool]
"""What a tools-only worker serves: no model, no notifications, no secrets needed."""

__all__ = [
    "ALL_ACTIVITIES",
    "TOOL_ACTIVITIES",
    "llm_next_step",
    "notify_approval",
    "preview_tool",
    "run_tool",
]
