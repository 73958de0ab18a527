"""Adapters that put the approval gate behind agent frameworks running on Temporal.

Each framework gets one module here (`hitl.integrations.openai_agents`, ...). An adapter
finds the run's gate (`hitl.gate.ApprovalGate.current()`), asks it about each call the
framework pauses for approval, and hands the framework the decision in its own terms
(approve, reject with the reviewer's reason, approve with the reviewer's arguments).
Import the framework's module only where that framework is installed.
"""
