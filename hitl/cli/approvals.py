"""The commands that look at and decide approvals: pending, show, approve, reject,
modify, revoke, review."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client

from hitl.cli.common import APPLIED, REFUSED, CliError, exit_code, print_json
from hitl.cli.render import pending_json, table
from hitl.decisions import AnyDecision, RefusalCode
from hitl.models import (
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    ModifyDecision,
    RejectDecision,
    RevokeDecision,
)
from hitl.reviews import Outcome, Reviews
from hitl.terminal import (
    Prompter,
    about,
    edit_in_editor,
    find_editor,
    format_approval,
    outcome_words,
    parse_modified_args,
    review,
    reviewer_identity,
)
from hitl.text import shorten, visible, visible_json


def _left(seconds: float) -> str:
    return about(seconds) if seconds >= 0 else "expired"


async def cmd_pending(client: Client, args: argparse.Namespace) -> int:
    items = await Reviews(client).pending(args.tool)
    if args.json:
        print_json([pending_json(item) for item in items])
        return APPLIED
    if not items:
        print("No pending approvals." + (f" (tool {visible(args.tool)})" if args.tool else ""))
        return APPLIED
    now = datetime.now(UTC)
    rows = [
        [
            shorten(item.id, 24),
            shorten(item.session_id, 40),
            shorten(item.tool, 24),
            shorten(item.summary, 60),
            about(max(0.0, (now - item.created_at).total_seconds())),
            _left((item.expires_at - now).total_seconds()),
        ]
        for item in items
    ]
    print(table(rows, ["ID", "RUN", "TOOL", "ACTION", "AGE", "LEFT"], fit=3))
    return APPLIED


async def cmd_show(client: Client, args: argparse.Namespace) -> int:
    record = await Reviews(client).get(args.id)
    if args.json:
        print_json(record.model_dump(mode="json"))
    else:
        print(format_approval(record))
    return APPLIED


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """What became of a decision, for scripts: they branch on `outcome` and `code`."""
    entry = outcome.entry
    if outcome.applied:
        state = "applied"
    elif outcome.ended or outcome.rejected is not None or entry is not None:
        state = "refused"
    else:
        state = "sent"  # not confirmed in time: it applies when a worker runs the workflow
    code = RefusalCode.RUN_ENDED.value if outcome.ended else outcome.refusal_code
    return {
        "approval_id": outcome.approval_id,
        "workflow_id": outcome.workflow_id,
        "outcome": state,
        "code": code,
        "refusal": outcome.rejected if outcome.rejected is not None else entry and entry.refusal,
        "entry": entry.model_dump(mode="json") if entry is not None else None,
        "record": outcome.record.model_dump(mode="json") if outcome.record else None,
    }


def report(outcome: Outcome, what: str = "", as_json: list[dict[str, Any]] | None = None) -> int:
    """Say what became of a decision, and return the exit code that means.

    `what` reminds of the action when the caller knows it (a bulk decision, a modify);
    the words between brackets are only what the run answered (a quorum's "2 of 2
    approvals"). With `as_json`, the outcome goes there instead, to be printed as JSON.
    """
    code = exit_code(outcome)
    if as_json is not None:
        as_json.append(outcome_json(outcome))
        return code
    words = outcome_words(outcome)
    approval_id = visible(outcome.approval_id)
    if code != APPLIED:
        print(f"hitl: {approval_id}: {words}", file=sys.stderr)
        return code
    # `what` only reminds of the action (`show` has it all): short enough for one line.
    reminder = f": {shorten(visible(what), 80)}" if what else ""
    print(f"{approval_id} in run {visible(outcome.workflow_id)}: {words}{reminder}.")
    return code


async def _sent(reviews: Reviews, decision: AnyDecision, workflow_id: str | None = None) -> Outcome:
    """Send a decision, and confirm it from the run before an exit code is chosen: a
    worker that is restarting (after a crash) takes the run over only after a while."""
    return await reviews.confirm(await reviews.decide(decision, workflow_id=workflow_id))


async def _decide(
    client: Client, args: argparse.Namespace, build: Callable[[str], AnyDecision]
) -> int:
    if args.all:
        if args.id:
            raise CliError("give an approval id or --all, not both")
        return await _decide_all(client, args, build)
    if not args.id:
        raise CliError("give the approval id (from `hitl pending`), or --all")
    # Sent first, confirmed after: no query stands between the reviewer and the run. The
    # library binds a signed decision to the action a decision now decides.
    return _single(args, await _sent(Reviews(client), build(args.id)))


def _single(args: argparse.Namespace, outcome: Outcome, what: str = "") -> int:
    if not args.json:
        return report(outcome, what)
    printed: list[dict[str, Any]] = []
    code = report(outcome, what, printed)
    print_json(printed[0])
    return code


async def _decide_all(
    client: Client, args: argparse.Namespace, build: Callable[[str], AnyDecision]
) -> int:
    reviews = Reviews(client)
    items = await reviews.pending(args.tool)
    printed: list[dict[str, Any]] | None = [] if args.json else None
    if not items and printed is None:
        print("No pending approvals." + (f" (tool {visible(args.tool)})" if args.tool else ""))
        return APPLIED
    result = APPLIED
    outcomes = await reviews.decide_many(items, lambda item: build(item.id)) if items else []
    for item, outcome in zip(items, outcomes, strict=True):
        result = max(result, report(outcome, f"{item.tool}: {item.summary}", printed))
    if printed is not None:
        print_json(printed)
    return result


async def cmd_approve(client: Client, args: argparse.Namespace) -> int:
    reviewer = reviewer_identity(args.reviewer)
    return await _decide(
        client,
        args,
        lambda approval_id: ApproveDecision(
            approval_id=approval_id,
            reviewer=reviewer,
            comment=args.comment or "",
            action_digest=args.digest,
            scope=args.scope,
            max_risk=args.max_risk,
        ),
    )


async def cmd_reject(client: Client, args: argparse.Namespace) -> int:
    reviewer = reviewer_identity(args.reviewer)
    return await _decide(
        client,
        args,
        lambda approval_id: RejectDecision(
            approval_id=approval_id,
            reviewer=reviewer,
            reason=args.reason,
            action_digest=args.digest,
        ),
    )


async def cmd_revoke(client: Client, args: argparse.Namespace) -> int:
    decision = RevokeDecision(
        approval_id=args.id, reviewer=reviewer_identity(args.reviewer), reason=args.reason or ""
    )
    reviews = Reviews(client)
    located = await reviews.locate(args.id)
    return _single(args, await _sent(reviews, decision, located.workflow_id), "standing approval")


async def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    reviewer = reviewer_identity(args.reviewer)
    reviews = Reviews(client)
    record = await reviews.get(args.id)
    if args.edit:
        editor = find_editor()
        if not editor:
            raise CliError("--edit needs $EDITOR (or $VISUAL); or pass the arguments with --args")
        current = visible_json(record.action_json.args, indent=2)
        text = await asyncio.to_thread(edit_in_editor, current, editor)
        parsed = parse_modified_args(record, text)
        if isinstance(parsed, str):
            raise CliError(f"not sent: the edited arguments are {parsed}", REFUSED)
        new_args: Any = parsed
    else:
        try:
            new_args = json.loads(args.args)
        except json.JSONDecodeError as error:
            raise CliError(f"not sent: --args is not valid JSON ({error})", REFUSED) from error
        if not isinstance(new_args, dict):
            raise CliError("not sent: --args must be a JSON object", REFUSED)
    # Arguments that fail the tool's validation are still sent: the run refuses them and
    # the refusal stays in the decision log, so the audit shows the attempt.
    decision = ModifyDecision(
        approval_id=record.id,
        reviewer=reviewer,
        args=new_args,
        comment=args.comment or "",
        action_digest=args.digest,
    )
    # The reminder is what now runs, not the preview of what was proposed.
    return _single(
        args,
        await _sent(reviews, decision, record.session_id),
        f"{record.action_json.tool} with {json.dumps(new_args, ensure_ascii=False)}",
    )


async def cmd_review(client: Client, args: argparse.Namespace) -> int:
    reviews = Reviews(client)
    # The listing already names each approval's run: one query per run gives the records.
    runs = (
        [args.run]
        if args.run
        else list(dict.fromkeys(item.session_id for item in await reviews.pending()))
    )
    queue: list[ApprovalRecord] = []
    for run_id in runs:
        records = await reviews.approvals_of(run_id)
        queue += [r for r in records if r.status is ApprovalStatus.PENDING]
    if not queue:
        print("No pending approvals to review.")
        return APPLIED

    async def numbered() -> AsyncIterator[ApprovalRecord]:
        for index, record in enumerate(queue, 1):
            print(f"[{index}/{len(queue)}]", flush=True)
            yield record

    result = APPLIED

    def reported(record: ApprovalRecord, outcome: Outcome) -> None:
        nonlocal result
        result = max(
            result, report(outcome, f"{record.action_json.tool}: {record.preview.summary}")
        )

    ended = await review(
        reviews, numbered(), reviewer_identity(args.reviewer), Prompter(), reported
    )
    if ended:
        print("No more answers; the remaining approvals stay pending.")
    return result
