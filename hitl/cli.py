"""`hitl`: the reviewer's command line (pending, show, approve, reject, modify, review, ...).

Exit codes: 0 applied (or nothing wrong), 1 refused by the run (or, for doctor,
something is wrong), 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    GetSystemInfoRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from hitl import contract
from hitl.bridge import add_send_arguments, run_bridge, send_command
from hitl.codec import CODEC_KEY_ENV, OLD_KEYS_ENV, codec_from_env
from hitl.codec import new_key as new_codec_key
from hitl.config import (
    NOT_INSTALLED,
    ConfigError,
    Settings,
    choose_model,
    connect,
    describe_connection,
    load_settings,
    package_versions,
    parse_duration,
)
from hitl.decisions import AnyDecision
from hitl.devserver import temporal_version
from hitl.entry import run_main
from hitl.models import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    ApprovalStatus,
    ApproveDecision,
    ModifyDecision,
    PendingApproval,
    RejectDecision,
    RevokeDecision,
    RunState,
)
from hitl.plugin import search_attribute_commands
from hitl.reviewers import (
    REVIEWERS_ENV,
    SIGNING_KEY_ENV,
    ReviewerConfigError,
    add_reviewer,
    decision_keys,
    load_config,
    new_key,
    signer,
)
from hitl.reviews import (
    ApprovalNotFound,
    Outcome,
    ReviewError,
    Reviews,
    RunNotFound,
    polling_lately,
)
from hitl.runworker import add_worker_arguments, run_worker
from hitl.terminal import (
    Prompter,
    ask_decision,
    edit_in_editor,
    format_approval,
    format_entry,
    parse_modified_args,
    reviewer_identity,
)
from hitl.text import columns, framed, shorten, terminal_width, visible, visible_json
from hitl.visibility import missing_search_attributes

APPLIED, REFUSED, USAGE = 0, 1, 2


class CliError(Exception):
    """One clear sentence for the user, with the exit code it means."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        # Messages quote approval ids, run ids and reviewers' names: escaped once, here,
        # wherever the error is printed.
        super().__init__(visible(message))
        self.code = code


# --- output helpers ----------------------------------------------------------------------------


def _human(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "expired"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _table(rows: list[list[str]], headers: list[str], fit: int | None = None) -> str:
    """Aligned columns of escaped cells; column `fit` is cut so a row fits the terminal.

    A row the terminal wraps goes on at column 0, where the cut-off end of a cell could
    read as a row of its own.
    """
    cells = [[visible(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(columns(row[i]) for row in cells) for i in range(len(headers))]
    if fit is not None:
        others = sum(widths) - widths[fit] + 2 * (len(widths) - 1)
        room = max(columns(headers[fit]), 12, terminal_width() - others)
        if widths[fit] > room:
            widths[fit] = room
            for row in cells:
                row[fit] = shorten(row[fit], room)
    return "\n".join(
        "  ".join(cell + " " * (widths[i] - columns(cell)) for i, cell in enumerate(row)).rstrip()
        for row in cells
    )


def pending_json(item: PendingApproval) -> dict[str, Any]:
    """The documented record shape, from the memo's summary of a pending approval."""
    return {
        "id": item.id,
        "session_id": item.session_id,
        "status": ApprovalStatus.PENDING.value,
        "tool": item.tool,
        "action_json": item.action_json.model_dump(mode="json") if item.action_json else None,
        "action_digest": item.action_digest,
        "preview": {"summary": item.summary},
        "risk": item.risk,
        "created_at": item.created_at.isoformat(),
        "expires_at": item.expires_at.isoformat(),
        "reviewer": None,
        "reviewed_at": None,
        "modified_action_json": None,
        "reason": None,
    }


def _print_json(value: Any) -> None:
    # Still JSON for the same values, but no control or bidi character reaches a terminal.
    print(visible_json(value, indent=2))


def _print_framed(label: str, text: str, **print_args: Any) -> None:
    print("\n".join(framed(label, text)), **print_args)


# --- commands --------------------------------------------------------------------------------


async def cmd_pending(client: Client, args: argparse.Namespace) -> int:
    items = await Reviews(client).pending(args.tool)
    if args.json:
        _print_json([pending_json(item) for item in items])
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
            _human((now - item.created_at).total_seconds()),
            _human((item.expires_at - now).total_seconds()),
        ]
        for item in items
    ]
    print(_table(rows, ["ID", "RUN", "TOOL", "ACTION", "AGE", "LEFT"], fit=3))
    return APPLIED


async def cmd_show(client: Client, args: argparse.Namespace) -> int:
    record = await Reviews(client).get(args.id)
    if args.json:
        _print_json(record.model_dump(mode="json"))
    else:
        print(format_approval(record))
    return APPLIED


def _report(outcome: Outcome, what: str = "") -> int:
    """Say what became of a decision, and the exit code that means.

    `what` reminds of the action when the caller knows it (a bulk decision, a modify);
    between brackets goes only what the run answered (a quorum's "2 of 2 approvals").
    """
    entry, approval_id, run_id = outcome.entry, outcome.approval_id, outcome.workflow_id
    if outcome.rejected:
        print(f"Refused {visible(approval_id)}: {visible(outcome.rejected)}", file=sys.stderr)
        return REFUSED
    if outcome.ended:
        record = outcome.record
        if record is not None and record.reviewer:
            state = f"{record.status.value} by {visible(record.reviewer)}"
        else:
            state = record.status.value if record is not None else "decided"
        raise CliError(
            f"run {run_id} has already ended; approval {approval_id} is {state}", REFUSED
        )
    if entry is None:
        if outcome.no_worker is not None:
            queue = f" {outcome.no_worker}" if outcome.no_worker else ""
            raise CliError(
                f"the decision was sent to run {run_id}, but no worker polls its task "
                f"queue{queue}; it applies when one runs the workflow (`hitl worker`; "
                "`hitl doctor` checks)"
            )
        raise CliError(
            f"the decision was sent to run {run_id}, but the run did not confirm it in "
            "time; it applies when a worker runs the workflow (`hitl audit` shows it then; "
            "`hitl doctor` checks for workers)"
        )
    if entry.outcome != "applied":
        print(f"Refused {visible(approval_id)}: {visible(entry.refusal)}", file=sys.stderr)
        return REFUSED
    if _waits_for_more(outcome):
        print(
            f"Recorded {visible(entry.reviewer)}'s approval of {visible(approval_id)} "
            f"({visible(entry.note or '')}); it waits for more approvers."
        )
        return APPLIED
    verb = {
        "approve": "Approved",
        "reject": "Rejected",
        "modify": "Modified",
        "revoke": "Revoked",
    }[entry.kind]
    answered = f" ({visible(entry.note)})" if entry.note else ""
    # `what` only reminds of the action (`show` has it all): short enough for one line.
    reminder = f": {shorten(visible(what), 80)}" if what else ""
    print(
        f"{verb} {visible(approval_id)}{answered} in run {visible(run_id)} as "
        f"{visible(entry.reviewer)}{reminder}."
    )
    return APPLIED


def _waits_for_more(outcome: Outcome) -> bool:
    """An applied vote that the quorum does not complete yet ("1 of 2 approvals")."""
    entry = outcome.entry
    if entry is None or entry.kind != "approve" or not entry.note:
        return False
    if outcome.record is not None and outcome.record.id == outcome.approval_id:
        return outcome.record.status is ApprovalStatus.PENDING
    votes, _, needed = entry.note.removesuffix(" approvals").partition(" of ")
    return votes.isdigit() and needed.isdigit() and int(votes) < int(needed)


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
    # Sent first, confirmed after: no query stands between the reviewer and the run.
    return _report(await _sent(Reviews(client), build(args.id)))


async def _decide_all(
    client: Client, args: argparse.Namespace, build: Callable[[str], AnyDecision]
) -> int:
    reviews = Reviews(client)
    items = await reviews.pending(args.tool)
    if not items:
        print("No pending approvals." + (f" (tool {visible(args.tool)})" if args.tool else ""))
        return APPLIED
    result = APPLIED
    outcomes = await reviews.decide_many(items, lambda item: build(item.id))
    for item, outcome in zip(items, outcomes, strict=True):
        try:
            if _report(outcome, f"{item.tool}: {item.summary}"):
                result = REFUSED
        except CliError as error:
            print(f"{visible(item.id)}: {error}", file=sys.stderr)
            result = REFUSED
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


async def cmd_revoke(client: Client, args: argparse.Namespace) -> int:
    decision = RevokeDecision(
        approval_id=args.id, reviewer=reviewer_identity(args.reviewer), reason=args.reason or ""
    )
    reviews = Reviews(client)
    located = await reviews.locate(args.id)
    return _report(await _sent(reviews, decision, located.workflow_id), "standing approval")


async def cmd_bridge(client: Client, args: argparse.Namespace) -> int:
    if args.insecure_no_auth:
        print(
            "hitl: WARNING: --insecure-no-auth: anyone who can publish on the decisions "
            "channel can decide as anyone",
            file=sys.stderr,
        )
    await run_bridge(client, insecure_no_auth=args.insecure_no_auth)
    return APPLIED


async def cmd_codec(args: argparse.Namespace) -> int:
    if args.action == "key":
        print(new_codec_key())
        print(
            f"Set it as {CODEC_KEY_ENV} for the workers, the starter, hitl and hitl serve; "
            f"after a rotation, keep the old one in {OLD_KEYS_ENV}.",
            file=sys.stderr,
        )
        return APPLIED
    codec = codec_from_env()
    if codec is None:
        raise CliError(f"set {CODEC_KEY_ENV} (`hitl codec key` makes one) to serve the codec")
    import uvicorn

    from hitl.codec_server import codec_app

    origins = args.origin or ["http://localhost:8233"]
    print(
        f"Codec server on http://{args.host}:{args.port} for {', '.join(origins)}; in the Web "
        "UI set Codec Server to this address.",
        file=sys.stderr,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            codec_app(codec, origins), host=args.host, port=args.port, log_level="warning"
        )
    )
    await server.serve()
    return APPLIED


async def cmd_reviewers(args: argparse.Namespace) -> int:
    if args.action == "key":
        print(new_key())
        print(
            "Give it to the worker in HITL_DECISION_KEYS as ISSUER:KEY (api:KEY for the review "
            "API) and to the signer as HITL_SIGNING_KEY.",
            file=sys.stderr,
        )
        return APPLIED
    path = Path(args.file or os.environ.get(REVIEWERS_ENV) or "reviewers.toml")
    if args.action == "add":
        if not args.name:
            raise CliError("give the reviewer's name: hitl reviewers add NAME")
        token = add_reviewer(
            path,
            args.name,
            tools=args.tools.split(",") if args.tools else None,
            max_risk=args.max_risk,
            groups=args.groups.split(",") if args.groups else None,
        )
        print(token)
        print(
            f"Added {visible(args.name)} to {path}. The token (on standard output) is shown "
            "once: give it to them as their bearer token (only its hash is kept). Set "
            f"{REVIEWERS_ENV}={path} for the worker and `hitl serve`.",
            file=sys.stderr,
        )
        return APPLIED
    if args.action == "quorum":
        _set_quorum(path, args.min_risk, args.approvals)
    elif args.action == "policy":
        _set_policy(path, args.auto_approve_below, args.standing, args.approval_timeout)
    config = load_config(path)
    if args.action in ("quorum", "policy"):
        print(f"Wrote {path}; the worker reads it from {REVIEWERS_ENV}.", file=sys.stderr)
    for reviewer in config.reviewers.values():
        print(
            f"{visible(reviewer.name):20} tools {','.join(reviewer.tools)}  max risk "
            f"{reviewer.max_risk}  groups {','.join(reviewer.groups) or '-'}"
            + (f"  reads {','.join(reviewer.read)}" if reviewer.read else "")
        )
    for rule in sorted(config.quorum, key=lambda rule: rule.min_risk):
        print(f"quorum: risk >= {rule.min_risk} needs {rule.approvals} approvers")
    policy = config.policy
    timeout = policy.approval_timeout or DEFAULT_APPROVAL_TIMEOUT_SECONDS
    print(
        f"policy: auto-approve below risk {policy.auto_approve_below}; standing approvals "
        + ("allowed" if policy.standing else "turned off")
        + f"; approval timeout {_human(timeout)}"
        + (" (the default)" if policy.approval_timeout is None else "")
        + " for tools without their own"
    )
    return APPLIED


# --- writing the reviewers file's rules ----------------------------------------------------------


def _set_quorum(path: Path, min_risk: int | None, approvals: int | None) -> None:
    """Write (or replace) the `[[quorum]]` block for `min_risk`; 1 approver removes it."""
    if min_risk is None or approvals is None:
        raise CliError(
            "give both: hitl reviewers quorum --min-risk N --approvals K (calls at or above "
            "risk N need K different approvers; --approvals 1 removes the rule)"
        )
    if not 0 <= min_risk <= 100:
        raise CliError("--min-risk is a risk from 0 to 100")
    if not 1 <= approvals <= 20:
        raise CliError("--approvals is a number of different approvers from 1 to 20")
    kept = _without_blocks(
        _reviewers_text(path),
        lambda head, body: head == "[[quorum]]" and _min_risk(body) == min_risk,
    )
    if approvals > 1:
        rule = f"[[quorum]]\nmin_risk = {min_risk}\napprovals = {approvals}\n"
        kept = kept.rstrip("\n") + "\n\n" + rule
    _write_reviewers(path, kept)


def _set_policy(
    path: Path, below: int | None, standing: bool | None, timeout: float | None = None
) -> None:
    """Write (or replace) the `[policy]` table, keeping what is not given."""
    if below is None and standing is None and timeout is None:
        raise CliError(
            "give what to set: hitl reviewers policy --auto-approve-below N, "
            "--standing / --no-standing and/or --approval-timeout DURATION"
        )
    if below is not None and not 0 <= below <= 100:
        raise CliError("--auto-approve-below is a risk from 0 (none) to 100")
    current = load_config(path).policy if path.exists() else None
    below = below if below is not None else current.auto_approve_below if current else 0
    standing = standing if standing is not None else current.standing if current else True
    # Kept when not given: dropping it would quietly lengthen every approval's timeout.
    timeout = timeout if timeout is not None else current.approval_timeout if current else None
    table = f"[policy]\nauto_approve_below = {below}\nstanding = {str(standing).lower()}\n"
    if timeout is not None:
        table += f"approval_timeout = {timeout:g}\n"
    kept = _without_blocks(_reviewers_text(path), lambda head, body: head == "[policy]")
    _write_reviewers(path, kept.rstrip("\n") + "\n\n" + table)


def _reviewers_text(path: Path) -> str:
    return path.read_text() if path.exists() else "# Reviewers: `hitl reviewers add NAME`\n"


def _without_blocks(text: str, drop: Callable[[str, str], bool]) -> str:
    """The file without the tables `drop` names (by header line and body): a table runs
    from its header to the next one."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            blocks.append([])
        blocks[-1].append(line)
    kept = [blocks[0]]
    for block in blocks[1:]:
        head = block[0].split("#", 1)[0].strip().replace(" ", "")
        if not drop(head, "".join(block[1:])):
            kept.append(block)
    return "".join(line for block in kept for line in block)


def _min_risk(body: str) -> int | None:
    try:
        value = tomllib.loads(body).get("min_risk")
    except tomllib.TOMLDecodeError:
        return None
    return value if isinstance(value, int) else None


def _write_reviewers(path: Path, text: str) -> None:
    """Write the file only if it loads: a rule the worker can't read is never left there."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        draft.write_text(text)
        draft.chmod(0o600)
        try:
            load_config(draft)
        except ReviewerConfigError as error:
            raise CliError(
                f"{path} would not load after the change ({error}); it was left as it was: "
                "fix it by hand"
            ) from error
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """Stops on SIGINT or SIGTERM and returns, like `hitl worker` (uvicorn's own
        handling raises the signal again once stopped, which would end the process
        with it instead of exit code 0)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return Server


INSECURE_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! hitl serve --insecure-no-auth: DECISIONS ARE UNAUTHENTICATED.                          !!
!! Anyone who reaches {address} can approve, reject or modify any action, as any reviewer
!! name they type. Use it on your own machine only; for reviewers, set HITL_REVIEWERS.    !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


async def cmd_serve(args: argparse.Namespace) -> int:
    """The review API and the web inbox, under uvicorn, until SIGINT or SIGTERM."""
    import socket

    import uvicorn

    from hitl.api import create_app

    config = load_config()
    if not config.reviewers and not args.insecure_no_auth:
        raise CliError(
            f"no reviewers to authenticate: set {REVIEWERS_ENV} to a reviewers file "
            "(`hitl reviewers add NAME` creates one and prints the token), or pass "
            "--insecure-no-auth to serve with no authentication at all"
        )
    key = os.environ.get(SIGNING_KEY_ENV)
    # The API signs as `api`, whatever HITL_SIGNER says: a worker lets only that issuer
    # sign for reviewers other than itself.
    api_signer = signer({SIGNING_KEY_ENV: key}) if key else None
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as error:
        raise CliError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror}); pick another "
            "--port or --host"
        ) from error
    host, port = sock.getsockname()[:2]
    address = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    settings = load_settings()
    try:
        client = await connect(settings)
    except RuntimeError as error:
        sock.close()
        raise CliError(_down(settings, error)) from error
    if config.reviewers:
        print(
            f"hitl serve: {len(config.reviewers)} reviewer(s) from {config.path}; decisions "
            + ("signed as issuer api" if api_signer else "UNSIGNED"),
            file=sys.stderr,
        )
    else:
        print(INSECURE_WARNING.format(address=address), file=sys.stderr)
    if api_signer is None:
        print(
            f"hitl serve: {SIGNING_KEY_ENV} is not set, so decisions go out unsigned; a worker "
            "that requires signed decisions (HITL_DECISION_KEYS) refuses them. "
            "`hitl reviewers key` makes a key; the worker takes it as api:KEY.",
            file=sys.stderr,
        )
    app = create_app(
        client,
        config,
        api_signer,
        insecure=not config.reviewers,
        host=args.host,
        task_queue=settings.task_queue,
        workspace_root=os.environ.get("HITL_WORKSPACE_ROOT") or None,
    )
    server = _server_class()(
        uvicorn.Config(
            app,
            log_level="info",
            server_header=False,
            proxy_headers=False,
            # Open /events streams end with the server instead of holding it up.
            timeout_graceful_shutdown=3,
        )
    )
    print(f"hitl serve: the inbox and the API on {address}", file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])
    return APPLIED


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


async def cmd_modify(client: Client, args: argparse.Namespace) -> int:
    reviewer = reviewer_identity(args.reviewer)
    reviews = Reviews(client)
    record = await reviews.get(args.id)
    if args.edit:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
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
    return _report(
        await _sent(reviews, decision, record.session_id),
        f"{record.action_json.tool} with {json.dumps(new_args, ensure_ascii=False)}",
    )


async def cmd_review(client: Client, args: argparse.Namespace) -> int:
    reviewer = reviewer_identity(args.reviewer)
    prompter = Prompter()
    reviews = Reviews(client)
    # The listing already names each approval's run: one query per run gives the records.
    runs = (
        [args.run]
        if args.run
        else list(dict.fromkeys(item.session_id for item in await reviews.pending()))
    )
    queue = []
    for run_id in runs:
        records = await reviews.approvals_of(run_id)
        queue += [r for r in records if r.status is ApprovalStatus.PENDING]
    if not queue:
        print("No pending approvals to review.")
        return APPLIED
    outcome = APPLIED
    for index, record in enumerate(queue, 1):
        print(f"[{index}/{len(queue)}]")
        print(format_approval(record))
        decision = await asyncio.to_thread(ask_decision, record, reviewer, prompter)
        if decision is None:
            print("No more answers; the remaining approvals stay pending.")
            break
        sent = await _sent(reviews, decision, record.session_id)
        try:
            what = f"{record.action_json.tool}: {record.preview.summary}"
            if _report(sent, what) == REFUSED:
                outcome = REFUSED
        except CliError as error:
            print(str(error), file=sys.stderr)
            outcome = REFUSED
    return outcome


async def cmd_runs(client: Client, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    runs = await Reviews(client).runs(args.state, args.limit)
    for run in runs:
        run["age"] = _human((now - run["started_at"]).total_seconds())
        run["started_at"] = run["started_at"].isoformat()
    if args.json:
        _print_json(
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
        print(
            _table(
                [
                    [
                        shorten(r["id"], 40),
                        shorten(r["state"], 40),
                        str(r["pending"]),
                        r["age"],
                        shorten(r["task"], 50),
                    ]
                    for r in runs
                ],
                ["RUN", "STATE", "PENDING", "AGE", "TASK"],
                fit=4,
            )
        )
    return APPLIED


async def cmd_audit(client: Client, args: argparse.Namespace) -> int:
    audit = await Reviews(client).audit(args.run)
    records, refused = audit.approvals, audit.refused
    if args.json:
        _print_json(
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
        who = f" by {visible(record.reviewer)}" if record.reviewer else ""
        print()
        _print_framed(
            "",
            f"{visible(record.id)}  {visible(record.action_json.tool)}  {record.status.value}{who}"
            f"  created {record.created_at:%Y-%m-%d %H:%M:%S}"
            + (f"  decided {record.reviewed_at:%H:%M:%S}" if record.reviewed_at else ""),
        )
        _print_framed("  action: ", shorten(visible_json(record.action_json.args), 200))
        if record.modified_action_json:
            _print_framed(
                "  ran instead: ", shorten(visible_json(record.modified_action_json.args), 200)
            )
        if record.reason:
            _print_framed("  reason: ", visible(record.reason))
        for entry in record.decisions:
            _print_framed("  - ", format_entry(entry))
        if record.refused_dropped:
            print(f"  ({record.refused_dropped} more refused decisions were not kept)")
        if record.result is not None:
            outcome = "ok" if record.result.ok else "failed"
            _print_framed("  result: ", f"{outcome}: {visible(record.result.summary)}")
    for item in refused:
        print()
        line = f"refused at {item.received_at:%H:%M:%S}: {visible(item.refusal)}"
        if item.excerpt:
            line += f" [{visible(item.signal or 'payload')} {visible(item.excerpt)}]"
        _print_framed("", line)
    return APPLIED


async def cmd_doctor(args: argparse.Namespace) -> int:
    problems: list[str] = []
    try:
        settings = load_settings()
    except ConfigError as error:
        for label, value in describe_connection():
            _say(f"{label:13} {value}")
        problems.append(str(error))
        return _doctor_verdict(problems)
    for package, version in package_versions().items():
        if version == NOT_INSTALLED:
            problems.append(f"package {package} is not installed (`make install`)")
        where = f" ({sys.executable})" if package == "python" else ""
        _say(f"{package:13} {version.upper() if version == NOT_INSTALLED else version}{where}")
    try:
        binary, version = temporal_version()
        _say(f"temporal      {version} ({binary})")
    except RuntimeError as error:
        _say(f"temporal      MISSING: {error}")
        problems.append("the temporal CLI is missing (`make install`)")
    model = choose_model(None)
    _say(f"address       {settings.address}  [{settings.sources['address']}]")
    _say(f"namespace     {settings.namespace}  [{settings.sources['namespace']}]")
    _say(f"task queue    {settings.task_queue}  [{settings.sources['task_queue']}]")
    _say(f"model         {model.provider}:{model.name}  [{model.source}]")
    offline = "OpenAI default" if model.provider == "openai" else "none (offline)"
    base_source = "env OPENAI_BASE_URL" if model.base_url else "default"
    _say(f"base url      {model.base_url or offline}  [{base_source}]")
    for label, value in describe_connection():
        _say(f"{label:13} {value}")
    try:
        keys, reviewers = decision_keys(), load_config()
    except ReviewerConfigError as error:
        problems.append(f"the reviewer configuration is unusable: {error}")
        keys, reviewers = {}, None
    if keys:
        _say(f"decisions     signed: the worker accepts issuers {', '.join(sorted(keys))}")
    else:
        _say(
            "decisions     UNAUTHENTICATED: any reviewer name is believed (set "
            "HITL_DECISION_KEYS on the worker and HITL_REVIEWERS; see README)"
        )
    if reviewers is not None and reviewers.path is not None:
        _say(f"reviewers     {len(reviewers.reviewers)} in {reviewers.path}")
    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
    except (RuntimeError, TimeoutError) as error:
        _say(f"server        DOWN: nothing answers at {settings.address} ({_first_line(error)})")
        problems.append(
            f"the Temporal server at {settings.address} is not reachable: start it with "
            "`make server` (or set TEMPORAL_ADDRESS)"
        )
        return _doctor_verdict(problems)
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    _say(f"server        up at {settings.address} (server {info.server_version or 'unknown'})")
    try:
        missing = await missing_search_attributes(client)
    except RPCError as error:
        missing = []
        _say(f"search attrs  could not be listed: {error.message}")
    if missing:
        _say(f"search attrs  MISSING: {', '.join(missing)}")
        commands = search_attribute_commands(settings.namespace, missing)
        problems.append(
            "search attributes are missing: a worker registers them if it may; otherwise "
            "an operator runs:\n      " + "\n      ".join(commands)
        )
    else:
        _say(f"search attrs  registered ({', '.join(k.name for k in contract.SEARCH_ATTRIBUTES)})")
    pollers = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    # The server lists a stopped worker for minutes after its last poll: only recent
    # polls count as a worker that runs.
    live = polling_lately(pollers.pollers)
    if live:
        names = ", ".join(sorted({p.identity for p in live}))
        _say(f"workers       {len(live)} polling {settings.task_queue} ({visible(names)})")
    else:
        gone = len(pollers.pollers) - len(live)
        _say(
            f"workers       NONE polling {settings.task_queue}"
            + (f" ({gone} stopped in the last minutes)" if gone else "")
        )
        problems.append(
            f"no worker polls task queue {settings.task_queue}: start one with `hitl worker`"
        )
    return _doctor_verdict(problems)


def _doctor_verdict(problems: list[str]) -> int:
    if not problems:
        print("\nAll good.")
        return APPLIED
    print("\nProblems:")
    for problem in problems:
        _say(f"  - {problem}")
    return REFUSED


def _first_line(error: BaseException) -> str:
    return shorten((str(error).strip().splitlines() or [type(error).__name__])[0], 200)


def _say(line: str) -> None:
    """A line of doctor's report: values from the environment, the config file, the server
    and whoever polls the task queue, escaped (the labels are plain ASCII: unchanged)."""
    print(visible(line))


# --- the parser and the entry point ------------------------------------------------------------


REVIEWER_HELP = (
    "your name (default: HITL_REVIEWER, else HITL_SIGNER when you sign with your own key, "
    "else the OS user)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hitl", description="Review what AI agents want to do: list, show, decide, audit."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        # SUPPRESS keeps `hitl --debug CMD` working: the subcommand doesn't reset it.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        return command

    pending = add("pending", "every pending approval across all runs, oldest first")
    pending.add_argument("--tool", help="only this tool's approvals")
    pending.add_argument("--json", action="store_true", help="JSON records (see README)")
    show = add("show", "the full summary a reviewer decides on")
    show.add_argument("id", help="approval id, as `hitl pending` prints it")
    show.add_argument("--json", action="store_true")

    def decision_command(name: str, help_text: str, bulk: bool = True) -> argparse.ArgumentParser:
        command = add(name, help_text)
        if bulk:
            command.add_argument("id", nargs="?", help="approval id")
            command.add_argument("--all", action="store_true", help="every pending approval")
            command.add_argument("--tool", help="with --all: only this tool's approvals")
        else:
            command.add_argument("id", help="approval id")
        command.add_argument("--reviewer", help=REVIEWER_HELP)
        command.add_argument(
            "--digest", help="apply only if the action still has this digest (from `show`)"
        )
        return command

    approve = decision_command("approve", "approve the exact proposed action")
    approve.add_argument("--comment", help="a note kept with the decision")
    approve.add_argument(
        "--scope",
        choices=("once", "action", "tool"),
        default="once",
        help="also approve this exact action (action) or this tool up to --max-risk (tool) "
        "for the rest of the run: a standing approval, revoked with `hitl revoke`",
    )
    approve.add_argument("--max-risk", type=int, help="with --scope tool: up to this risk")
    revoke = add("revoke", "end a standing approval (named by the approval it was granted with)")
    revoke.add_argument("id", help="the approval id the standing approval was granted with")
    revoke.add_argument("--reason", help="why")
    revoke.add_argument("--reviewer", help=REVIEWER_HELP)
    codec = add("codec", "encrypted payloads: make a key, or serve the codec for the Web UI")
    codec.add_argument("action", choices=("key", "serve"))
    codec.add_argument("--host", default="127.0.0.1")
    codec.add_argument("--port", type=int, default=8081)
    codec.add_argument(
        "--origin",
        action="append",
        default=[],
        help="a Web UI origin allowed to call it (default http://localhost:8233; repeatable)",
    )
    bridge = add("bridge", "decisions through Redis: run the bridge, or send a signed one")
    transports = bridge.add_subparsers(dest="transport", required=True)
    add_send_arguments(transports.add_parser("send", help="sign a decision with your key, send"))
    transports.add_parser(
        "redis", help="turn signed decisions from Redis into decisions"
    ).add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="believe the reviewer named in a message (no reviewers file): for trials only",
    )
    reviewers = add(
        "reviewers",
        "manage the reviewers file: add NAME, list, key, quorum (--min-risk N --approvals K), "
        "policy (--auto-approve-below N, --standing/--no-standing, --approval-timeout D)",
    )
    reviewers.add_argument("action", choices=("add", "list", "key", "quorum", "policy"))
    reviewers.add_argument("name", nargs="?", help="with add: the reviewer's name")
    reviewers.add_argument("--file", help=f"the reviewers file (default: {REVIEWERS_ENV})")
    reviewers.add_argument("--tools", help="tools they may decide, comma-separated (all)")
    reviewers.add_argument("--max-risk", type=int, default=100, help="highest risk (100)")
    reviewers.add_argument("--groups", help="their groups, comma-separated")
    reviewers.add_argument(
        "--min-risk", type=int, help="with quorum: calls at or above this risk (0-100)"
    )
    reviewers.add_argument(
        "--approvals",
        type=int,
        help="with quorum: need this many different approvers (1 removes the rule)",
    )
    reviewers.add_argument(
        "--auto-approve-below",
        type=int,
        help="with policy: flagged calls below this risk are approved by policy (0: none)",
    )
    reviewers.add_argument(
        "--standing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with policy: whether reviewers may grant standing approvals",
    )
    reviewers.add_argument(
        "--approval-timeout",
        type=parse_duration,
        metavar="DURATION",
        help="with policy: auto-reject after this long (90s, 30m, 2h) for tools without "
        "their own timeout",
    )
    reject = decision_command("reject", "reject; the agent is told the reason")
    reject.add_argument("--reason", required=True, help="why (the agent reads it)")
    modify = decision_command("modify", "run the action with other arguments", bulk=False)
    how = modify.add_mutually_exclusive_group(required=True)
    how.add_argument("--args", help="the new arguments as a JSON object")
    how.add_argument("--edit", action="store_true", help="edit the arguments in $EDITOR")
    modify.add_argument("--comment", help="a note kept with the decision")
    review = add("review", "go through pending approvals, asking Approve? [y/n/e(dit)]")
    review.add_argument("--run", help="only this run's approvals")
    review.add_argument("--reviewer", help=REVIEWER_HELP)
    runs = add(
        "runs",
        "runs that use the gate (agents and workflows of your own): state, pending count, "
        "age and what each is about",
    )
    runs.add_argument(
        "--state",
        help="running, awaiting_approval, completed, step_limit, failed, or a state "
        "a workflow of yours publishes",
    )
    runs.add_argument("--limit", type=int, default=200, help="at most this many (200)")
    runs.add_argument("--json", action="store_true")
    audit = add("audit", "every approval of a run with every decision: who, when, outcome")
    audit.add_argument("run", help="workflow id of the run")
    audit.add_argument("--json", action="store_true")
    serve = add("serve", "the review API and the web inbox (http://127.0.0.1:8000/)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help=f"serve without a reviewers file ({REVIEWERS_ENV}): anyone who reaches the port "
        "decides, under any name; for your own machine only",
    )
    add("doctor", "check the local set-up and say what is wrong")
    add_worker_arguments(
        add("worker", "run a worker: agent runs and their tools (--tools MODULES)")
    )
    return parser


COMMANDS = {
    "pending": cmd_pending,
    "show": cmd_show,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "modify": cmd_modify,
    "review": cmd_review,
    "runs": cmd_runs,
    "audit": cmd_audit,
    "revoke": cmd_revoke,
    "bridge": cmd_bridge,
}


async def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return await cmd_doctor(args)
        if args.command == "worker":
            return await run_worker(args)
        if args.command == "reviewers":
            return await cmd_reviewers(args)
        if args.command == "codec":
            return await cmd_codec(args)
        if args.command == "serve":
            return await cmd_serve(args)
        if args.command == "bridge" and args.transport == "send":
            return await send_command(args)  # a reviewer's machine: Redis, no Temporal
        settings = load_settings()
        try:
            client = await connect(settings)
        except RuntimeError as error:
            raise CliError(_down(settings, error)) from error
        return int(await COMMANDS[args.command](client, args))
    except CliError as error:
        if args.debug:
            traceback.print_exc()
        print(f"hitl: {error}", file=sys.stderr)
        return error.code
    except (ReviewerConfigError, ConfigError) as error:
        print(f"hitl: {visible(str(error))}", file=sys.stderr)
        return USAGE
    except ReviewError as error:
        if args.debug:
            traceback.print_exc()
        print(f"hitl: {visible(str(error))}", file=sys.stderr)
        return REFUSED if isinstance(error, (ApprovalNotFound, RunNotFound)) else USAGE
    except RPCError as error:
        if args.debug:
            traceback.print_exc()
        print(f"hitl: Temporal refused the request: {_first_line(error)}", file=sys.stderr)
        return USAGE


def _down(settings: Settings, error: BaseException) -> str:
    return (
        f"cannot reach the Temporal server at {settings.address} ({_first_line(error)}); "
        "start it with `make server`, or set TEMPORAL_ADDRESS"
    )


def main() -> None:
    run_main(run)


if __name__ == "__main__":
    main()
