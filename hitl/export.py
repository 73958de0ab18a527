"""The audit export's two formats, JSON Lines and CSV, from approval records. Pure.

`hitl audit --since` and the API's `GET /audit` write the same lines through `lines()`.

- **JSON Lines**: one approval a line: the `ApprovalRecord` as the run keeps it (every
  decision in `decisions`), with `workflow_id` and `outcome` added. The last line is
  always the end: `{"end": true, "approvals": N, "decisions": M, "withheld": W,
  "problems": [...], "complete": bool}`, so a stream cut short, or a run that could not
  be read, can't pass for a complete export.
- **CSV**: one row per decision, the approval's fields repeated on each (an approval
  with no decision yet: one row, its decision columns empty), in `CSV_COLUMNS`; then one
  `problem` row per run that could not be read and one `end` row, told apart by the
  first column, `row`. Every cell is at most `MAX_CELL_CHARS` characters, and a cell a
  spreadsheet would read as a formula (starting with = + - @, a tab, CR or LF, or their
  full-width forms) is prefixed with `'`, so a reason like `=HYPERLINK(...)` stays text.

Neither can redraw a terminal it is printed on: JSON Lines escapes control, bidi and
invisible characters as JSON escapes (`visible_json`: the same values, exactly); a CSV
cell shows them as `hitl` shows them (`\\x1b`, `\\u202e`), so JSON Lines is the exact copy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from hitl.models import ApprovalRecord, DecisionEntry, RuleVerdict, canonical_json
from hitl.text import clip, visible, visible_json

Format = Literal["jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv")
MEDIA_TYPES: dict[Format, str] = {
    "jsonl": "application/jsonl; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
MAX_CELL_CHARS = 4_000
"""A CSV cell's bound: the arguments, a reason, a refusal, cut with a note of how much."""
MAX_PROBLEMS = 200
"""Unreadable runs named in an export's end; past this, only counted."""
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")

CSV_COLUMNS: tuple[str, ...] = (
    "row",  # decision, approval (no decision yet), problem, end
    "workflow_id",
    "run_id",
    "approval_id",
    "tool",
    "action_digest",
    "scope_key",
    "args",
    "risk",
    "requested_by",
    "created_at",
    "expires_at",
    "status",
    "outcome",
    "reviewer",
    "reviewed_at",
    "reason",
    "modified_args",
    "quorum",
    "standing",
    "rule",
    "rule_verdict",
    "shadow_rule",
    "shadow_verdict",
    "executed_at",
    "result_ok",
    "decision_index",
    "decision_id",
    "decision_kind",
    "decision_reviewer",
    "decision_received_at",
    "decision_outcome",
    "decision_code",
    "decision_refusal",
    "decision_reason",
    "decision_args",
    "decision_issuer",
    "decision_scope",
    "decision_note",
    "note",  # problem and end rows: what went wrong, what the export holds
)


def cell(value: object) -> str:
    """One CSV cell: text, bounded, never read as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, (dict, list)):
        text = canonical_json(value)
    elif hasattr(value, "isoformat"):
        text = value.isoformat()
    else:
        text = str(value)
    text = clip(visible(text, multiline=True), MAX_CELL_CHARS)
    if text.startswith(_FORMULA_STARTS):
        text = "'" + text
    return text


def record_json(record: ApprovalRecord) -> dict[str, Any]:
    """One approval as its JSON Lines line holds it."""
    return {
        "workflow_id": record.session_id,
        "outcome": record.outcome,
        **record.model_dump(mode="json"),
    }


def _verdict(verdict: RuleVerdict | None) -> tuple[str | None, str | None]:
    return (verdict.rule, verdict.verdict) if verdict is not None else (None, None)


def csv_rows(record: ApprovalRecord) -> list[list[str]]:
    """An approval's rows: one per decision (one with no decision columns if none yet)."""
    rule, rule_verdict = _verdict(record.rule)
    shadow, shadow_verdict = _verdict(record.shadow)
    approval = [
        record.session_id,
        record.run_id,
        record.id,
        record.action_json.tool,
        record.action_digest,
        record.scope_key,
        record.action_json.args,
        record.risk,
        record.context.requested_by,
        record.created_at,
        record.expires_at,
        record.status.value,
        record.outcome,
        record.reviewer,
        record.reviewed_at,
        record.reason,
        record.modified_action_json.args if record.modified_action_json else None,
        record.quorum,
        record.standing,
        rule,
        rule_verdict,
        shadow,
        shadow_verdict,
        record.executed_at,
        record.result.ok if record.result is not None else None,
    ]
    entries: list[DecisionEntry | None] = list(record.decisions) or [None]
    rows = []
    for index, entry in enumerate(entries):
        decision: list[object] = (
            [None] * 13
            if entry is None
            else [
                index,
                entry.decision_id,
                entry.kind.value,
                entry.reviewer,
                entry.received_at,
                entry.outcome,
                entry.code,
                entry.refusal,
                entry.reason,
                entry.args,
                entry.issuer,
                entry.scope,
                entry.note,
            ]
        )
        kind = "approval" if entry is None else "decision"
        rows.append([kind] + [cell(value) for value in [*approval, *decision, None]])
    return rows


def _csv_line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(row)
    return out.getvalue()


def _side_row(kind: str, note: str) -> list[str]:
    return [kind] + [""] * (len(CSV_COLUMNS) - 2) + [cell(note)]


@dataclass
class Tally:
    """What an export held, said in its end line."""

    approvals: int = 0
    decisions: int = 0
    withheld: int = 0
    """Approvals in the range of tools the reader may not read: left out, counted."""
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def end(self) -> dict[str, Any]:
        return {
            "end": True,
            "approvals": self.approvals,
            "decisions": self.decisions,
            "withheld": self.withheld,
            "complete": self.complete,
            "problems": [clip(p, 1000) for p in self.problems[:MAX_PROBLEMS]],
            "problems_not_shown": max(0, len(self.problems) - MAX_PROBLEMS),
        }


async def lines(
    records: AsyncIterator[ApprovalRecord],
    form: Format,
    tally: Tally,
    readable: Callable[[ApprovalRecord], bool] = lambda record: True,
) -> AsyncIterator[str]:
    """The export, line by line, as `records` come; `tally.problems` is the list the
    records' source appends unreadable runs to (read at the end, once it has them all)."""
    if form == "csv":
        yield _csv_line(list(CSV_COLUMNS))
    async for record in records:
        if not readable(record):
            tally.withheld += 1
            continue
        tally.approvals += 1
        tally.decisions += len(record.decisions)
        if form == "jsonl":
            yield visible_json(record_json(record)) + "\n"
        else:
            for row in csv_rows(record):
                yield _csv_line(row)
    end = tally.end()
    if form == "jsonl":
        yield visible_json(end) + "\n"
        return
    for problem in end["problems"]:
        yield _csv_line(_side_row("problem", problem))
    summary = (
        f"{tally.approvals} approvals, {tally.decisions} decisions"
        + (f", {tally.withheld} withheld (tools you may not read)" if tally.withheld else "")
        + ("; complete" if tally.complete else f"; INCOMPLETE: {len(tally.problems)} run(s) unread")
    )
    yield _csv_line(_side_row("end", summary))


def iter_csv(text: str) -> Iterator[dict[str, str]]:
    """An export's CSV read back as rows by column name (for tests and tools)."""
    yield from csv.DictReader(io.StringIO(text, newline=""))
