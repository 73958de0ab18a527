"""The commands over a time range of approvals: `audit --since` (export) and `stats`.

`hitl audit WORKFLOW_ID` (one run's chain, `hitl.cli.runs`) keeps working; `hitl audit
--since 30d --format jsonl|csv [--output FILE]` exports every approval in the range with
every decision (`hitl.export`), and `hitl stats --since 30d` shows the figures of
`hitl.insights`. Both read `Reviews.records`; a run whose records can't be read is named
on stderr, and the command exits 1: an export or a figure is never quietly short.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from temporalio.client import Client

from hitl.cli.common import APPLIED, REFUSED, CliError, print_json
from hitl.cli.render import table
from hitl.cli.runs import cmd_audit as cmd_audit_run
from hitl.durations import RangeError, time_range
from hitl.export import FORMATS, Tally, lines
from hitl.insights import MIN_DECISIONS, MIN_RATE, Insights, InsightsBuilder, Rates
from hitl.reviews import Reviews
from hitl.terminal import about
from hitl.text import shorten, visible

SINCE_HELP = "from this long ago (30d, 12h, 90m) or this date or time (2026-11-01, ...T09:00Z)"
UNTIL_HELP = "up to (not including) this long ago or this date or time (default: now)"
MAX_SHOWN = 20
"""Rows of a long table (load, disagreements, candidates) shown; --json has them all."""


def add_commands(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`audit` and `stats`, added through `hitl.cli.build_parser`'s `add`."""
    audit = add(
        "audit",
        "every approval with every decision: of one run (WORKFLOW_ID, across its "
        "continue-as-new chain), or of every run over a time range (--since), exported "
        "as JSON Lines or CSV",
    )
    audit.add_argument("run", nargs="?", help="workflow id of the run")
    audit.add_argument("--json", action="store_true", help="with a run: as JSON")
    audit.add_argument("--since", help=SINCE_HELP)
    audit.add_argument("--until", help=UNTIL_HELP)
    audit.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="with --since: jsonl (one approval a line, default) or csv (one row per decision)",
    )
    audit.add_argument("--output", "-o", help="with --since: write to this file (default stdout)")
    stats = add(
        "stats",
        "approval figures over a time range: outcome rates and time to decide per tool and "
        "reviewer, load, shadow rules' agreement, candidates for a rule or standing approval",
    )
    stats.add_argument("--since", default="30d", help=SINCE_HELP + " (30d)")
    stats.add_argument("--until", help=UNTIL_HELP)
    stats.add_argument("--json", action="store_true", help="the figures as JSON (see README)")
    stats.add_argument(
        "--min-decisions",
        type=int,
        default=MIN_DECISIONS,
        help=f"a candidate was settled by people at least this often ({MIN_DECISIONS})",
    )
    stats.add_argument(
        "--min-rate",
        type=float,
        default=MIN_RATE,
        help=f"... and approved unchanged at least this share of the time ({MIN_RATE})",
    )


def _range(args: argparse.Namespace) -> tuple[datetime, datetime | None]:
    try:
        return time_range(args.since, args.until)
    except RangeError as error:
        raise CliError(str(error)) from None


def _report(problems: list[str]) -> int:
    for problem in problems:
        print(f"hitl: {visible(problem)}", file=sys.stderr)
    if problems:
        print(
            f"hitl: incomplete: {len(problems)} run(s) could not be read (above); start a "
            "worker on their task queue (`hitl doctor`) and run this again",
            file=sys.stderr,
        )
        return REFUSED
    return APPLIED


async def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    if args.run is not None:
        if args.since or args.until or args.format or args.output:
            raise CliError(
                "give a run's workflow id or a range (--since), not both: "
                "`hitl audit WORKFLOW_ID` or `hitl audit --since 30d --format csv`"
            )
        return await cmd_audit_run(client, args)
    if not args.since:
        raise CliError(
            "name a run (`hitl audit WORKFLOW_ID`) or a range (`hitl audit --since 30d`)"
        )
    if args.json:
        raise CliError("--json is for one run; a range is exported with --format jsonl or csv")
    since, until = _range(args)
    problems: list[str] = []
    tally = Tally(problems=problems)
    records = Reviews(client).records(since, until, problems=problems)
    export = lines(records, args.format or "jsonl", tally)
    if args.output is None:
        async for line in export:
            sys.stdout.write(line)
        sys.stdout.flush()
    else:
        target = Path(args.output)
        # Written beside it and moved into place whole: a file at that name is an export
        # that ran to its end (which says whether it is complete).
        try:
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".hitl-audit-")
        except OSError as error:
            raise CliError(f"can't write beside {args.output}: {error.strerror or error}") from None
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                async for line in export:
                    out.write(line)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        print(
            f"wrote {tally.approvals} approval(s), {tally.decisions} decision(s) to "
            f"{visible(args.output)}",
            file=sys.stderr,
        )
    return _report(problems)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else about(value)


def _rate_rows(groups: list[Rates], reviewers: bool = False) -> list[list[str]]:
    rows = []
    for group in groups:
        row = [
            shorten(group.name, 40),
            str(group.requests),
            _percent(group.approve_rate),
            _percent(group.modify_rate),
            _percent(group.reject_rate),
        ]
        if not reviewers:
            row[2:2] = [str(group.pending)]
            row += [_percent(group.expiry_rate), _percent(group.auto_rate)]
        rows.append([*row, _seconds(group.decide_p50_seconds), _seconds(group.decide_p90_seconds)])
    return rows


def render(found: Insights) -> str:
    """The figures as text for a terminal (every cell escaped by `table`)."""
    out: list[str] = []
    until = f"{found.until:%Y-%m-%d %H:%M}Z" if found.until else "now"
    withheld = f" ({found.withheld} of tools you may not read left out)" if found.withheld else ""
    out.append(
        f"{found.approvals} approval(s) from {found.since:%Y-%m-%d %H:%M}Z to {until}{withheld}"
    )
    if not found.approvals:
        return "\n".join(out)
    out += ["", "By tool"]
    headers = ["TOOL", "REQUESTS", "PENDING", "APPROVED", "MODIFIED", "REJECTED", "EXPIRED"]
    out.append(table(_rate_rows(found.tools), [*headers, "AUTO", "P50", "P90"], fit=0))
    if found.reviewers:
        out += ["", "By reviewer (their own decisions)"]
        headers = ["REVIEWER", "DECISIONS", "APPROVED", "MODIFIED", "REJECTED", "P50", "P90"]
        out.append(table(_rate_rows(found.reviewers, reviewers=True), headers, fit=0))
    busy = [bucket for bucket in found.load if bucket.requests]
    if busy:
        top = max(bucket.requests for bucket in busy)
        shown = busy[-MAX_SHOWN:]
        out += [
            "",
            f"Load (requests per {found.bucket}; the last {len(shown)} of {len(busy)} with any)",
        ]
        when = "%Y-%m-%d %H:00" if found.bucket == "hour" else "%Y-%m-%d"
        rows = [
            [f"{b.start:{when}}", str(b.requests), "#" * max(1, round(30 * b.requests / top))]
            for b in shown
        ]
        out.append(table(rows, ["START (UTC)", "REQUESTS", ""]))
    shadow = found.shadow
    if shadow.compared or shadow.asked:
        out += [
            "",
            f"Shadow rules: agreed with people {shadow.agreed} of {shadow.compared} times "
            f"({_percent(shadow.rate)}); {shadow.asked} passed to a person"
            + (f" ({shadow.failed} failed)" if shadow.failed else "")
            + f"; would have approved what people did not: {shadow.approved_not_approved}; "
            f"denied what people approved: {shadow.denied_approved}",
        ]
        if shadow.disagreements:
            rows = [
                [
                    d.approval_id,
                    shorten(d.tool, 24),
                    shorten(d.rule, 24),
                    d.verdict,
                    d.outcome,
                    shorten(d.reviewer or "", 20),
                    shorten(d.reason or "", 60),
                ]
                for d in shadow.disagreements[:MAX_SHOWN]
            ]
            headers = ["APPROVAL", "TOOL", "RULE", "RULE SAID", "PEOPLE", "REVIEWER", "REASON"]
            out.append(table(rows, headers, fit=6))
    out += [
        "",
        f"Candidates for a rule or a standing approval (approved unchanged >= "
        f"{_percent(found.min_rate)} of >= {found.min_decisions} decisions)",
    ]
    if found.candidates:
        rows = [
            [
                c.kind,
                shorten(c.tool, 24),
                shorten(c.scope_key or c.example or "(every call)", 50),
                f"{c.approved}/{c.settled}",
                _percent(c.rate),
                str(c.max_risk),
            ]
            for c in found.candidates[:MAX_SHOWN]
        ]
        headers = ["KIND", "TOOL", "WHAT", "APPROVED", "RATE", "MAX RISK"]
        out.append(table(rows, headers, fit=2))
    else:
        out.append("none")
    return "\n".join(out)


async def cmd_stats(client: Client, args: argparse.Namespace) -> int:
    since, until = _range(args)
    try:
        builder = InsightsBuilder(
            since, until, min_decisions=args.min_decisions, min_rate=args.min_rate
        )
    except ValueError as error:
        raise CliError(f"{error} (--min-decisions, --min-rate)") from None
    async for record in Reviews(client).records(since, until, problems=builder.problems):
        builder.add(record)
    found = builder.build()
    if args.json:
        print_json(found.model_dump(mode="json"))
    else:
        print(render(found))
    return _report(builder.problems)
