"""The reference agent's workflow classes only: orchestration, no I/O.

`WORKFLOWS` is what a worker registers (`hitl worker --workflows workflows,activities`
reads it, and `ACTIVITIES` from `activities`).
"""

from workflows.agent import AgentWorkflow

WORKFLOWS: list[type] = [AgentWorkflow]
ALL_WORKFLOWS = WORKFLOWS  # the name tests and older code use

__all__ = ["ALL_WORKFLOWS", "WORKFLOWS", "AgentWorkflow"]
