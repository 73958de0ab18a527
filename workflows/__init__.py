"""Workflow classes only: orchestration, no I/O."""

from workflows.agent import AgentWorkflow

ALL_WORKFLOWS = [AgentWorkflow]

__all__ = ["ALL_WORKFLOWS", "AgentWorkflow"]
