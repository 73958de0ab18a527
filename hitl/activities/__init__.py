"""The library's activities: describe, check and run tools, notify reviewers, verify
decisions and starts, and the guard on who may call them (`callers`)."""

from collections.abc import Callable
from typing import Any

from hitl.activities.authz import verify_decision, verify_start_activity
from hitl.activities.notify import notify_approval, notify_reviewers
from hitl.activities.tools import ToolActivities
from hitl.tools import ToolRegistry, load_tools


def library_activities(
    registry: ToolRegistry | None = None, *, tools_only: bool = False
) -> list[Callable[..., Any]]:
    """The activities a worker serves for the gate over these tools (the built-in
    toolkits by default).

    `tools_only`: just the tools' activities, for a worker that runs commands with no
    secrets in its environment (docs/secrets.md).
    """
    tools = ToolActivities(registry if registry is not None else load_tools()).all()
    if tools_only:
        return tools
    return [notify_approval, notify_reviewers, verify_decision, verify_start_activity, *tools]


__all__ = [
    "ToolActivities",
    "library_activities",
    "notify_approval",
    "notify_reviewers",
    "verify_decision",
    "verify_start_activity",
]
