"""What every `hitl` command shares: exit codes, the one error type, printing."""

from __future__ import annotations

from typing import Any

from hitl.config import Settings
from hitl.decisions import RefusalCode, form_of
from hitl.reviews import Outcome
from hitl.text import framed, shorten, visible, visible_json

APPLIED, REFUSED, USAGE = 0, 1, 2


class CliError(Exception):
    """One clear sentence for the user, with the exit code it means."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        # Messages quote approval ids, run ids and reviewers' names: escaped once, here,
        # wherever the error is printed.
        super().__init__(visible(message))
        self.code = code


def exit_code(outcome: Outcome) -> int:
    """The exit code a decision's outcome means, from its refusal code (`FORMS`): never
    from the sentence. A decision sent but not confirmed is not known to be refused."""
    if outcome.applied:
        return APPLIED
    if outcome.ended:
        return form_of(RefusalCode.RUN_ENDED).exit
    if outcome.entry is None and outcome.rejected is None:
        return USAGE
    return form_of(outcome.refusal_code).exit


def print_json(value: Any) -> None:
    # Still JSON for the same values, but no control or bidi character reaches a terminal.
    print(visible_json(value, indent=2))


def print_framed(label: str, text: str, **print_args: Any) -> None:
    print("\n".join(framed(label, text)), **print_args)


def first_line(error: BaseException) -> str:
    return shorten((str(error).strip().splitlines() or [type(error).__name__])[0], 200)


def down(settings: Settings, error: BaseException) -> str:
    return (
        f"cannot reach the Temporal server at {settings.address} ({first_line(error)}); "
        "start it with `make server`, or set TEMPORAL_ADDRESS"
    )
