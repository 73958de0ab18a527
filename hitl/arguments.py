"""A modification's new arguments, checked against the approval's JSON Schema.

The reviewer's side (the API, the CLI, the inbox through the API) checks new arguments
here before sending them, without the tool's code; the run checks them again with the
tool's own code, which may refuse more.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from hitl.models import ApprovalRecord

MAX_PROBLEMS = 5
"""A sentence names at most this many problems."""


def schema_problem(record: ApprovalRecord, args: dict[str, Any]) -> str | None:
    """What the tool's JSON Schema (`record.args_schema`) says is wrong with new
    arguments, in one sentence; None when it finds nothing, or the record has no schema."""
    if record.args_schema is None:
        return None
    return problems_with(record.args_schema, args)


def problems_with(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """What `schema` says is wrong with `args`, in one sentence; None when nothing is.
    Pure and deterministic: the gate checks a modification with it inside the run."""
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(args),
        key=lambda error: list(error.path),
    )
    if not errors:
        return None
    return "; ".join(
        f"{'.'.join(str(part) for part in error.path) or 'arguments'}: {error.message}"
        for error in errors[:MAX_PROBLEMS]
    )
