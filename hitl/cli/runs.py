"""The commands that look at runs: runs, audit."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from temporalio.client import Client

from hitl.cli.common import APPLIED, print_framed, print_json
from hitl.cli.render import table
from hitl.models import RunState
from hitl.reviews import Reviews
from hitl.terminal import about, format_entry
from hitl.text import shorten, visible, visible_json


async def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    runs = await Reviews(client).runs(args.state, args.limit)
    for run in runs:
        run["age"] = about(max(0.0, (now - run["started_at"]).total_seconds()))
        run["started_at"] = run["started_at"].isoformat()
    if args.json:
        print_json(
            [{k: v for k, v in run.items() if k not in ("age", "task_tool")} for run in runs]
        )
    elif not runs:
        known = [state.value for state in RunState]
        print(
            "No runs that use the gate."
            + (f" (state {visible(args.state)})" if args.state else "")
            # A workflow of your own may publish other states; a typo finds nothing too.
            + (
                f"; the states the gate publishes are {', '.join(known)}"
                if args.state and args.state not in known
                else ""
            )
        )
    else:
        rows = [
            [
                shorten(r["id"], 40),
                shorten(r["state"], 40),
                str(r["pending"]),
                r["age"],
                shorten(r["task"], 50),
            ]
            for r in runs
        ]
        print(table(rows, ["RUN", "STATE", "PENDING", "AGE", "TASK"], fit=4))
    return APPLIED


async def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    audit = await Reviews(client).audit(args.run)
    records, refused = audit.approvals, audit.refused
    if args.json:
        print_json(
            {
                "run": args.run,
                "status": audit.status,
                "runs": audit.runs,
                "approvals": [record.model_dump(mode="json") for record in records],
                "refused_decisions": [item.model_dump(mode="json") for item in refused],
            }
        )
        return APPLIED
    print(f"Run {visible(args.run)}: {len(records)} approval(s)")
    for record in records:
        who = f" by {visible(record.reviewer)}" if record.reviewer and not record.expired else ""
        print()
        print_framed(
            "",
            f"{visible(record.id)}  {visible(record.action_json.tool)}  {record.state_word}{who}"
            f"  created {record.created_at:%Y-%m-%d %H:%M:%S}"
            + (f"  decided {record.reviewed_at:%H:%M:%S}" if record.reviewed_at else ""),
        )
        print_framed("  action: ", shorten(visible_json(record.action_json.args), 200))
        if record.modified_action_json:
            print_framed(
                "  ran instead: ", shorten(visible_json(record.modified_action_json.args), 200)
            )
        if record.reason:
            print_framed("  reason: ", visible(record.reason))
        for entry in record.decisions:
            print_framed("  - ", format_entry(entry))
        if record.refused_dropped:
            print(f"  ({record.refused_dropped} more refused decisions were not kept)")
        if record.result is not None:
            outcome = "ok" if record.result.ok else "failed"
            print_framed("  result: ", f"{outcome}: {visible(record.result.summary)}")
    for item in refused:
        print()
        line = f"refused at {item.received_at:%H:%M:%S}: {visible(item.refusal)}"
        if item.excerpt:
            line += f" [{visible(item.signal or 'payload')} {visible(item.excerpt)}]"
        print_framed("", line)
    return APPLIED
