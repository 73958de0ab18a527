"""`hitl policy test RULES --since 30d`: a proposed rule set replayed over recorded
approvals (`hitl.backtest`), before it is turned on.

Exit codes: 0 no dangerous disagreement, 1 the rules would have approved something a
person rejected, modified or let expire (each is listed), 2 usage (a rules file that
can't be used, a bad time, no Temporal server).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from hitl.backtest import Case, Report, backtest, read_export
from hitl.cli.common import APPLIED, REFUSED, CliError, down, print_json
from hitl.cli.render import table
from hitl.config import connect, load_settings
from hitl.durations import RangeError, parse_moment, time_range
from hitl.models import ApprovalRecord
from hitl.reviews import Reviews
from hitl.rules import RulesError, load_rules
from hitl.text import shorten, visible

DANGEROUS_EXIT = REFUSED
POLICY_HELP = (
    "auto-approval rules: `test RULES --since 30d` replays them over recorded approvals "
    "and lists where they would have overruled a person"
)


def add_policy_parser(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """`hitl policy test ...`, added to the CLI's parser by its `add`."""
    policy = add("policy", POLICY_HELP)
    actions = policy.add_subparsers(dest="policy_action", required=True, metavar="ACTION")
    test = actions.add_parser(
        "test",
        help="backtest a rules file over recorded approvals",
        description="Replay a rules file over approvals people decided: prompts it would "
        "have removed, and every case where it would have approved what a person rejected, "
        "modified or let expire (exit 1), or denied what a person approved.",
    )
    test.add_argument("rules", help="the rules file (TOML, as HITL_RULES would name it)")
    test.add_argument(
        "--since",
        help="approvals created since: a duration ago (30d, 12h) or an ISO time "
        "(default 30d; with --from, every line)",
    )
    test.add_argument("--until", help="and before: a duration ago or an ISO time (default now)")
    test.add_argument(
        "--from",
        dest="source",
        metavar="FILE",
        help="read the approvals from a JSON Lines audit export instead of Temporal",
    )
    test.add_argument("--json", action="store_true", help="the report as JSON")
    test.add_argument(
        "--limit", type=int, default=50, help="list at most this many cases of each kind (50)"
    )


def moment(text: str, now: datetime) -> datetime:
    """A moment as every range command reads it (`hitl.durations`)."""
    try:
        return parse_moment(text, now)
    except RangeError as error:
        raise CliError(str(error)) from None


def time_span(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime | None]:
    """[since, until) as every range command reads it (`hitl.durations`)."""
    try:
        return time_range(since, until, now)
    except RangeError as error:
        raise CliError(str(error)) from None


async def cmd_policy(args: argparse.Namespace) -> int:
    try:
        rules = load_rules(Path(args.rules))
    except RulesError as error:
        raise CliError(str(error)) from None
    assert rules is not None
    now = datetime.now(UTC)
    problems: list[str] = []
    if args.source:
        # An export may hold every approval: without --since, all of it is read.
        if args.since:
            since, until = time_span(args.since, args.until, now)
        else:
            since, until = None, moment(args.until, now) if args.until else None
        try:
            report = backtest(rules, read_export(Path(args.source), problems, since, until))
        except OSError as error:
            raise CliError(f"the export {args.source} can't be read: {error}") from None
    else:
        start, until = time_span(args.since or "30d", args.until, now)
        report = backtest(rules, [r async for r in _recorded(start, until, problems)])
    report.problems = problems
    if args.json:
        print_json(report.as_json())
    else:
        _print(report, args.rules, max(0, args.limit))
    return DANGEROUS_EXIT if report.dangerous else APPLIED


async def _recorded(
    since: datetime, until: datetime | None, problems: list[str]
) -> AsyncIterator[ApprovalRecord]:

    settings = load_settings()
    try:
        client = await connect(settings)
    except RuntimeError as error:
        raise CliError(down(settings, error)) from error
    async for record in Reviews(client).records(since, until, problems=problems):
        yield record


def _print(report: Report, rules: str, limit: int) -> None:
    share = f" ({report.removed / report.decided:.0%})" if report.decided else ""
    print(
        f"Rules {visible(rules)} (digest {report.digest}, mode {report.mode}) over "
        f"{report.records} recorded approval(s), {report.decided} decided by people or "
        "expired:"
    )
    print(f"  prompts removed: {report.removed}{share}")
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(report.verdicts.items())) or "none"
    print(f"  verdicts: {verdicts}")
    if report.errors:
        print(f"  rule errors (a person would be asked): {report.errors}")
    for rule, count in report.by_rule.most_common(10):
        print(f"    {visible(rule)}: {count}")
    if report.skipped:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items()))
        print(f"  not judged (no person decided them): {skipped}")
    _cases(
        "Would have APPROVED what a person rejected, modified or let expire",
        report.dangerous,
        limit,
    )
    _cases("Would have DENIED what a person approved", report.denied_approved, limit)
    for problem in report.problems:
        print(f"  unreadable: {visible(problem)}", file=sys.stderr)
    if report.dangerous:
        print(
            f"\n{len(report.dangerous)} dangerous disagreement(s): narrow the rules named "
            "above, or keep them in shadow mode (exit 1)."
        )
    else:
        print("\nNo dangerous disagreement.")


def _cases(title: str, cases: list[Case], limit: int) -> None:
    if not cases:
        return
    print(f"\n{title}: {len(cases)}")
    rows = [
        [
            case.id,
            shorten(case.run, 30),
            shorten(case.tool, 24),
            case.outcome + (f" by {shorten(case.reviewer, 20)}" if case.reviewer else ""),
            shorten(case.verdict.rule, 30),
            shorten(case.args, 60),
            shorten(case.reason, 60),
        ]
        for case in cases[:limit]
    ]
    print(table(rows, ["APPROVAL", "RUN", "TOOL", "PERSON", "RULE", "ARGS", "REASON"], fit=5))
    if len(cases) > limit:
        print(f"... and {len(cases) - limit} more (--limit, or --json for all)")


__all__ = ["add_policy_parser", "cmd_policy"]
