"""Adapters that put the approval gate behind agent frameworks running on Temporal.

Each adapter is one small module over the gate's public API (`ApprovalGate.current()`,
`ApprovalGate.ask(...)`, or `open_call` then `wait` when the approval ids are needed
before any decision): it turns the framework's own "this call needs approval" into a
question to the gate, and the gate's outcome into the framework's own answer, so the
framework's agent continues with the decision. Import the module of the framework you
use; nothing here imports a framework by itself.
"""
