"""Start an agent run and follow it: `python starter.py "TASK" --workspace DIR` (see
--help), and the runs `make demo` makes (`hitl.demo`).

The run is the reference agent's workflow (`contract.WORKFLOW_NAME`), started by name on
the task queue its worker polls; with `--review inline` its approvals are decided here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from hitl import contract
from hitl.config import (
    ConfigError,
    Settings,
    choose_model,
    connect,
    load_settings,
    package_versions,
)
from hitl.devserver import temporal_version
from hitl.durations import parse_duration
from hitl.entry import run_main
from hitl.logs import configure_logging
from hitl.models import (
    MAX_TASK_CHARS,
    ApprovalRecord,
    ApprovalStatus,
    ModelSettings,
    RunInput,
    RunResult,
    RunState,
    ScriptedTurn,
)
from hitl.reviewers import ReviewerConfigError, signer
from hitl.reviews import Outcome, Reviews
from hitl.starting import signed_input
from hitl.terminal import Prompter, format_approval, outcome_words, reviewer_identity
from hitl.terminal import review as review_loop
from hitl.text import framed, visible


def _tool_timeout(text: str) -> tuple[str, float]:
    name, _, duration = text.partition("=")
    if not duration:
        raise argparse.ArgumentTypeError(f"{text!r}: use TOOL=DURATION, e.g. send_email=2h")
    return name.strip(), parse_duration(duration)


def _tool_queue(text: str) -> tuple[str, str]:
    name, _, queue = text.partition("=")
    if not name.strip() or not queue.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: use TOOL=QUEUE, e.g. run_command=hitl-commands"
        )
    return name.strip(), queue.strip()


def tool_queues(
    given: list[tuple[str, str]], environ: dict[str, str] | None = None
) -> dict[str, str]:
    """HITL_TOOL_QUEUES (TOOL=QUEUE,...), then --tool-queue, which wins."""
    text = (os.environ if environ is None else environ).get("HITL_TOOL_QUEUES", "")
    queues = dict(_tool_queue(item) for item in text.split(",") if item.strip())
    queues.update(given)
    return queues


def run_tools(names: str | None) -> list[str] | None:
    """The tools the run may use, by name (None: all the worker's).

    Only names go in: the worker describes the tools at the start of the run, from its
    own definitions, and the run records them. Their policy (which calls need approval,
    risk, quorum) is the worker's, never what a starter says.
    """
    wanted = [name.strip() for name in names.split(",") if name.strip()] if names else None
    return wanted or None


def read_script(path: Path) -> tuple[list[ScriptedTurn] | None, str | None]:
    """The scripted model's turns from a file, or why they can't be read (one sentence)."""
    try:
        turns = json.loads(path.read_text())
    except OSError as error:
        return None, f"can't be read ({error.strerror or error})"
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"is not JSON ({error})"
    if not isinstance(turns, list):
        return None, 'is not a JSON list of turns ({"content": ..., "tool_calls": [...]})'
    script = []
    for number, turn in enumerate(turns, 1):
        try:
            script.append(ScriptedTurn.model_validate(turn))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            return None, (
                f"turn {number} is not {{content, tool_calls}}: "
                f"{where + ': ' if where else ''}{first['msg']}"
            )
    return script, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="starter.py",
        description="Start an agent run whose high-stakes tool calls wait for a reviewer.",
    )
    parser.add_argument("task", help="what the agent should do, in plain words")
    parser.add_argument("--workspace", required=True, help="directory the tools are confined to")
    parser.add_argument("--id", help="workflow id (default: agent-<time>-<random>)")
    parser.add_argument(
        "--approval-timeout",
        type=parse_duration,
        metavar="DURATION",
        help="auto-reject approvals sooner than the worker's timeout (each tool's, else "
        "[policy] approval_timeout in its reviewers file, else 30m); a run may only shorten it",
    )
    parser.add_argument(
        "--tool-timeout",
        type=_tool_timeout,
        action="append",
        default=[],
        metavar="TOOL=DUR",
        help="a shorter approval timeout for one tool, e.g. send_email=10m (repeatable)",
    )
    parser.add_argument(
        "--tools",
        metavar="NAME,...",
        help="the tools this run may use (default: every tool of the worker); the worker "
        "describes them at the start and the run records each one's definition, so a run "
        "paused for days keeps its tools",
    )
    parser.add_argument(
        "--tool-queue",
        type=_tool_queue,
        action="append",
        default=[],
        metavar="TOOL=QUEUE",
        help="run this tool's approved calls on another task queue, e.g. "
        "run_command=hitl-commands for a worker with no secrets (repeatable; also "
        "HITL_TOOL_QUEUES=TOOL=QUEUE,...)",
    )
    parser.add_argument(
        "--model",
        help="'scripted' for the offline scripted model, or an OpenAI model name "
        "(default: HITL_MODEL; scripted when neither OPENAI_API_KEY nor OPENAI_BASE_URL is set)",
    )
    parser.add_argument("--script", type=Path, help="scripted model: a JSON list of turns")
    parser.add_argument("--max-steps", type=int, default=12, help="LLM turns at most (12)")
    parser.add_argument(
        "--auto-approve-below",
        type=int,
        default=None,
        metavar="RISK",
        help="lower the worker's auto-approve threshold for this run (0: approve nothing by "
        "policy); the threshold itself is the worker's ([policy] in its reviewers file)",
    )
    parser.add_argument("--no-wait", action="store_true", help="start the run and return")
    parser.add_argument(
        "--review",
        choices=("inline", "none"),
        help="inline: ask here whenever the run waits for approval (default on a terminal); "
        "none: only wait for the result",
    )
    parser.add_argument(
        "--reviewer",
        help="your name, as who asked for the run and in the decision log (HITL_REVIEWER, "
        "else the OS user); with HITL_SIGNER and HITL_SIGNING_KEY set, the start is signed "
        "and you are the signer",
    )
    parser.add_argument("--evidence", type=Path, help="write the run's evidence here as JSON")
    return parser


def _temporal_cli() -> str:
    try:
        binary, version = temporal_version()
    except RuntimeError as error:
        return f"not available: {error}"
    return f"{binary} ({version})"


def starting_state(settings: Settings, model: ModelSettings, source: str) -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "temporal_cli": _temporal_cli(),
        "server": settings.address,
        "namespace": settings.namespace,
        "task_queue": settings.task_queue,
        "model": f"{model.provider}:{model.name} ({source})",
        "base_url": model.base_url
        or (
            os.environ.get("OPENAI_BASE_URL") or "OpenAI default"
            if model.provider == "openai"
            else "none (offline)"
        ),
    }


def _print_state(state: dict[str, Any], out: TextIO) -> None:
    out.write("Starting state:\n")
    for key, value in state.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {version}" for name, version in value.items())
        out.write(f"  {key + ':':12} {visible(value)}\n")
    if state["model"].startswith("scripted"):
        out.write("  NOTE: the offline scripted model plans this run; no LLM is called.\n")
    out.flush()


async def follow(
    reviews: Reviews,
    handle: WorkflowHandle,
    review: bool,
    reviewer: str,
    prompter: Prompter,
    out: TextIO,
) -> RunResult:
    """Wait for the result; meanwhile show each new approval and, if reviewing, decide it
    (the review loop of `hitl review`)."""
    result = asyncio.ensure_future(handle.result())

    async def new_approvals() -> AsyncIterator[ApprovalRecord]:
        shown: set[str] = set()
        while not result.done():
            try:
                records: list[ApprovalRecord] = await handle.query(
                    contract.QUERY_APPROVALS, result_type=list[ApprovalRecord]
                )
            except RPCError:
                records = []  # no worker has picked the run up yet
            for record in records:
                if record.status is ApprovalStatus.PENDING and record.id not in shown:
                    shown.add(record.id)
                    yield record
            await asyncio.wait({result}, timeout=0.25)

    def reported(record: ApprovalRecord, outcome: Outcome) -> None:
        out.write(f"Decision on {visible(record.id)}: {outcome_words(outcome)}.\n")
        out.flush()

    approvals = new_approvals()
    if review and await review_loop(reviews, approvals, reviewer, prompter, reported):
        out.write(
            "No more answers on standard input; the approval stays pending until someone "
            "decides or it times out.\n"
        )
    async for record in approvals:
        out.write(format_approval(record) + "\n")
        # Commands to copy: shell-quoted, so no id can add a command of its own. The hitl
        # commands, not a `temporal workflow signal`: they sign with your key where
        # decisions must be signed, and say what the run answered.
        quoted_id = shlex.quote(visible(record.id))
        out.write(
            f"Waiting for a decision on {visible(record.id)}; decide with:\n"
            f"  hitl approve {quoted_id}  (or hitl reject {quoted_id} --reason ..., "
            f"hitl modify {quoted_id} --args ...)\n"
        )
        out.flush()
    return await result


def print_result(result: RunResult, ui: str, out: TextIO) -> None:
    """The run's outcome; the answer, names and reasons escaped (`hitl.text`)."""
    out.write(
        f"\nRun {visible(result.evidence.get('workflow_id'))} {result.state.value} "
        f"after {result.steps} step(s).\n"
    )
    lines = framed("Answer: ", visible(result.answer, multiline=True))
    for record in result.approvals:
        who = f" by {visible(record.reviewer)}" if record.reviewer else ""
        line = (
            f"approval {visible(record.id)}: {visible(record.action_json.tool)} "
            f"{record.status.value}{who}"
        )
        if record.reason:
            line += f" ({visible(record.reason)})"
        lines += framed("  ", line)
    out.write("\n".join(lines) + f"\nWeb UI: {visible(ui)}\n")
    out.flush()


async def run(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(level=os.environ.get("HITL_LOG_LEVEL", "WARNING"))
    workspace = (
        args.workspace.resolve()
        if isinstance(args.workspace, Path)
        else Path(args.workspace).resolve()
    )
    if not workspace.is_dir():
        out.write(
            f"error: workspace {visible(workspace)} is not a directory; create it or pass another\n"
        )
        return 2
    if len(args.task) > MAX_TASK_CHARS:
        out.write(
            f"error: the task is {len(args.task):,} characters; at most {MAX_TASK_CHARS:,} are "
            "accepted. Put long material in a file in the workspace and refer to it.\n"
        )
        return 2
    tool_names = run_tools(args.tools)
    if args.auto_approve_below is not None and not 0 <= args.auto_approve_below <= 101:
        out.write("error: --auto-approve-below is a risk from 0 to 101\n")
        return 2
    try:
        signing = signer()
    except ReviewerConfigError as error:
        out.write(f"error: {visible(str(error))}\n")
        return 2
    try:
        queues = tool_queues(args.tool_queue)
    except argparse.ArgumentTypeError as error:
        out.write(f"error: HITL_TOOL_QUEUES: {visible(error)}\n")
        return 2
    choice = choose_model(args.model)
    script = None
    if args.script:
        script, problem = read_script(args.script)
        if problem:
            out.write(f"error: --script {visible(args.script)}: {visible(problem)}\n")
            return 2
        choice = dataclasses.replace(choose_model("scripted"), source="--script")
    model = ModelSettings(
        provider=choice.provider,
        name=choice.name,
        base_url=choice.base_url,
        script=script,
    )
    try:
        settings = load_settings()
    except ConfigError as error:
        out.write(f"error: {visible(str(error))}\n")
        return 2
    state = starting_state(settings, model, choice.source)
    _print_state(state, out)
    workflow_id = args.id or (f"agent-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}")
    run_input = RunInput(
        task=args.task,
        workspace=str(workspace),
        model=model,
        max_steps=args.max_steps,
        approval_timeout_seconds=args.approval_timeout,
        tool_approval_timeouts=dict(args.tool_timeout),
        auto_approve_below=args.auto_approve_below,
        tool_names=tool_names,
        tool_task_queues=queues,
        origin={"command": shlex.join([sys.argv[0], *(argv or sys.argv[1:])]), **state},
    )
    reviewer = reviewer_identity(args.reviewer)
    run_input = signed_input(run_input, workflow_id, reviewer, signing)
    out.write(
        f"Requested by {visible(run_input.requested_by)} "
        + (
            f"(signed with {visible(signing[0])}'s key)\n"
            if signing
            else "(unsigned: a worker that takes only signed decisions refuses this run; set "
            "HITL_SIGNER and HITL_SIGNING_KEY)\n"
        )
    )
    try:
        client: Client = await connect(settings)
    except RuntimeError as error:
        out.write(
            f"error: cannot reach Temporal at {visible(settings.address)} ({visible(error)}). "
            "Start it with "
            "`make server` (or set TEMPORAL_ADDRESS), and a worker with `python worker.py`.\n"
        )
        return 2
    handle = await client.start_workflow(
        contract.WORKFLOW_NAME,
        run_input,
        id=workflow_id,
        task_queue=settings.task_queue,
        result_type=RunResult,
        static_summary=args.task[:400],
        static_details=f"workspace {workspace}; model {model.provider}:{model.name}",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(contract.STATE_KEY, RunState.RUNNING.value),
                SearchAttributePair(contract.PENDING_KEY, 0),
            ]
        ),
    )
    ui = f"{settings.ui_url}/workflows/{workflow_id}"
    out.write(f"Started {visible(workflow_id)}\n  Web UI: {visible(ui)}\n")
    out.flush()
    if args.no_wait:
        # Commands to copy: shell-quoted, so no --id can add a command of its own.
        quoted_id = shlex.quote(visible(workflow_id))
        out.write(
            f"  status:  temporal workflow query --workflow-id {quoted_id} --name status\n"
            f"  pending: hitl pending\n"
            f"  decide:  hitl approve ID  (or reject ID --reason ..., modify ID --args ...), "
            "signed with your key when HITL_SIGNER and HITL_SIGNING_KEY are set; a worker that "
            "takes only signed decisions refuses an unsigned `temporal workflow signal`\n"
        )
        return 0
    review = (args.review or ("inline" if sys.stdin.isatty() else "none")) == "inline"
    try:
        result = await follow(Reviews(client), handle, review, reviewer, Prompter(stdout=out), out)
    except WorkflowFailureError as error:
        out.write(f"The run failed: {visible(error.cause)}\n  Web UI: {visible(ui)}\n")
        return 1
    print_result(result, ui, out)
    if args.evidence:
        args.evidence.write_text(
            json.dumps(
                result.evidence
                | {
                    "approvals": [record.model_dump(mode="json") for record in result.approvals],
                    "tool_runs": [run.model_dump(mode="json") for run in result.tool_runs],
                },
                indent=2,
            )
        )
        out.write(f"Evidence written to {visible(args.evidence)}\n")
    return 0 if result.state is RunState.COMPLETED else 1


def main() -> None:
    run_main(run)
