"""Everything that touches the world: the LLM, the tools, notifications."""

from collections.abc import Callable
from typing import Any

from activities.authz import verify_decision, verify_start_activity
from activities.llm import llm_next_step
from activities.notify import notify_approval, notify_reviewers
from activities.tools import ToolActivities
from hitl.tools import ToolRegistry, load_tools


def worker_activities(
    registry: ToolRegistry | None = None, *, tools_only: bool = False
) -> list[Callable[..., Any]]:
    """The activities a worker serves over these tools (the built-in toolkits by default).

    `tools_only`: just the tools' activities, for a worker that runs commands with no
    secrets in its environment (docs/secrets.md).
    """
    tools = ToolActivities(registry if registry is not None else load_tools()).all()
    return (
        tools
        if tools_only
        else [
            llm_next_step,
            notify_approval,
            notify_reviewers,
            verify_decision,
            verify_start_activity,
            *tools,
        ]
    )


__all__ = [
    "ToolActivities",
    "llm_next_step",
    "notify_approval",
    "notify_reviewers",
    "verify_decision",
    "verify_start_activity",
    "worker_activities",
]
