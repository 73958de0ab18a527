"""The backtest's time over recorded approvals (`hitl policy test --from`): synthetic
approval records written as a JSON Lines audit export, replayed by a predicate rule set
and by the same decisions written as Cedar policies. No server: the part `backtest` of
`bench/run.py`, or `python -m bench.backtest --count 10000` on its own.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hitl.backtest import backtest, read_export
from hitl.models import (
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    DecisionEntry,
    DecisionKind,
    ToolAction,
    ToolPreview,
)
from hitl.rules import load_rules

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TOOLS = ["delete_files", "write_file", "run_command", "send_email", "deploy"]
OUTCOMES = ["approved"] * 8 + ["rejected", "modified", "expired"]

PREDICATES = """
mode = "shadow"

[[rule]]
name = "no-prod"
effect = "deny"
reason = "production needs the release process"
tool = "deploy"
args = { path = "env", equals = "prod" }

[[rule]]
name = "old-logs"
effect = "approve"
tool = "delete_files"
risk = { lt = 50 }
args = { path = "paths.0", prefix = "logs/" }

[[rule]]
name = "docs"
effect = "approve"
tool = ["write_*"]
args = [{ path = "path", glob = "docs/*.md" }, { path = "size", le = 20000 }]

[[rule]]
name = "read-only-commands"
effect = "approve"
tool = "run_command"
args = { path = "command.0", in = ["ls", "cat", "git"] }
"""

CEDAR = """
@id("no-prod")
forbid(principal, action, resource == Tool::"deploy")
when { context.args has env && context.args.env == "prod" };

@id("old-logs")
permit(principal, action, resource == Tool::"delete_files")
when { context.risk < 50 && context.args has paths && context.args.paths.contains("logs/a.log") };

@id("docs")
permit(principal, action, resource == Tool::"write_file")
when { context.args has path && context.args.path like "docs/*.md" && context.args.size <= 20000 };

@id("read-only-commands")
permit(principal, action, resource == Tool::"run_command")
when { context.args has command && ["ls", "cat", "git"].containsAny(context.args.command) };
"""


def synthetic(n: int, rng: random.Random) -> ApprovalRecord:
    tool = rng.choice(TOOLS)
    args: dict[str, Any] = {
        "delete_files": lambda: {"paths": [rng.choice(["logs/a.log", "src/x.py"]), "logs/b.log"]},
        "write_file": lambda: {
            "path": rng.choice(["docs/a.md", "src/b.py"]),
            "size": rng.randrange(50_000),
            "content": "x" * rng.randrange(200),
        },
        "run_command": lambda: {"command": [rng.choice(["ls", "rm", "git"]), "-la"]},
        "send_email": lambda: {"to": ["a@example.com"], "subject": "s", "body": "b"},
        "deploy": lambda: {"env": rng.choice(["prod", "staging"]), "version": "1.2.3"},
    }[tool]()
    outcome = rng.choice(OUTCOMES)
    status = {
        "approved": ApprovalStatus.APPROVED,
        "modified": ApprovalStatus.MODIFIED,
        "rejected": ApprovalStatus.REJECTED,
        "expired": ApprovalStatus.REJECTED,
    }[outcome]
    reviewer = "system:timeout" if outcome == "expired" else rng.choice(["ann", "bob"])
    kind = {
        "approved": DecisionKind.APPROVE,
        "modified": DecisionKind.MODIFY,
        "rejected": DecisionKind.REJECT,
        "expired": DecisionKind.TIMEOUT,
    }[outcome]
    action = ToolAction(tool=tool, args=args)
    at = T0 + timedelta(seconds=n * 30)
    return ApprovalRecord(
        id=f"apr_{n:08d}",
        session_id=f"run-{n // 20}",
        action_json=action,
        action_digest=action.digest(),
        status=status,
        created_at=at,
        expires_at=at + timedelta(minutes=30),
        reviewed_at=at + timedelta(minutes=2),
        reviewer=reviewer,
        reason="no" if outcome == "rejected" else None,
        context=ApprovalContext(original_request="bench", requested_by="tester"),
        preview=ToolPreview(summary=f"{tool} ...", details="d" * 300),
        risk=rng.randrange(101),
        decisions=[DecisionEntry(kind=kind, reviewer=reviewer, received_at=at, outcome="applied")],
    )


def measure(count: int, root: Path, repeats: int = 3) -> dict[str, Any]:
    """Milliseconds to replay each rule set over `count` exported approvals (best of
    `repeats`, reading the export included), and what the replay found."""
    rng = random.Random(20)
    export = root / "audit.jsonl"
    with export.open("w") as out:
        for n in range(count):
            out.write(synthetic(n, rng).model_dump_json() + "\n")
    (root / "predicates.toml").write_text(PREDICATES)
    (root / "team.cedar").write_text(CEDAR)
    (root / "cedar.toml").write_text('[[rule]]\nname = "team"\ncedar = "team.cedar"\n')
    found: dict[str, Any] = {"count": count, "export_mb": export.stat().st_size / 1e6}
    for label in ("predicates", "cedar"):
        rules = load_rules(root / f"{label}.toml")
        assert rules is not None
        best = float("inf")
        for _ in range(repeats):
            problems: list[str] = []
            started = time.perf_counter()
            report = backtest(rules, read_export(export, problems))
            best = min(best, time.perf_counter() - started)
            assert not problems and report.records == count
        # Evaluation alone, over records already read.
        records = list(read_export(export, []))
        started = time.perf_counter()
        backtest(rules, records)
        found[f"{label}_ms"] = best * 1000
        found[f"{label}_eval_ms"] = (time.perf_counter() - started) * 1000
        found[f"{label}_removed"] = report.removed
        found[f"{label}_dangerous"] = len(report.dangerous)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hitl-backtest-") as scratch:
        print(json.dumps(measure(args.count, Path(scratch)), indent=2))


if __name__ == "__main__":
    main()
