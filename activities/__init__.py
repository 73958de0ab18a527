"""Everything that touches the world: the LLM, the workspace, commands, email, notifications."""

from collections.abc import Callable
from typing import Any

from activities.llm import llm_next_step
from activities.tools import notify_approval, preview_tool, run_tool

ALL_ACTIVITIES: list[Callable[..., Any]] = [llm_next_step, preview_tool, run_tool, notify_approval]

__all__ = ["ALL_ACTIVITIES", "llm_next_step", "notify_approval", "preview_tool", "run_tool"]
