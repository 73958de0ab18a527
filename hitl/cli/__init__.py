"""`hitl`: the reviewer's command line (pending, show, approve, reject, modify, review, ...).

Exit codes: 0 applied (or nothing wrong), 1 refused by the run (or, for doctor,
something is wrong), 2 usage or connection error (or a decision sent that the run did
not confirm in time). A refusal's exit code comes from its code
(`hitl.decisions.FORMS`).

- `approvals`: pending, show, approve, reject, modify, revoke, review
- `runs`: runs, audit of one run
- `insights`: audit over a time range (export), stats
- `admin`: doctor, reviewers, codec, bridge, serve, worker
- `policy`: policy test (backtest auto-approval rules)
- `render`: tables; `common`: exit codes, errors, printing
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence

from temporalio.client import Client
from temporalio.service import RPCError

from hitl.bridge import add_send_arguments, send_command
from hitl.cli.admin import (
    WORKER_DESCRIPTION,
    cmd_bridge,
    cmd_codec,
    cmd_doctor,
    cmd_reviewers,
    cmd_serve,
    cmd_worker,
)
from hitl.cli.approvals import (
    cmd_approve,
    cmd_modify,
    cmd_pending,
    cmd_reject,
    cmd_review,
    cmd_revoke,
    cmd_show,
)
from hitl.cli.common import USAGE, CliError, down, first_line
from hitl.cli.insights import add_commands as add_insight_commands
from hitl.cli.insights import cmd_audit, cmd_stats
from hitl.cli.policy import add_policy_parser, cmd_policy
from hitl.cli.runs import cmd_runs
from hitl.config import ConfigError, connect, load_settings
from hitl.decisions import RefusalCode, form_of
from hitl.durations import parse_duration
from hitl.entry import run_main
from hitl.reviewers import REVIEWERS_ENV, ReviewerConfigError
from hitl.reviews import ApprovalNotFound, ReviewError, RunNotFound
from hitl.text import visible

__all__ = ["build_parser", "main", "run"]


REVIEWER_HELP = (
    "your name (default: HITL_REVIEWER, else HITL_SIGNER when you sign with your own key, "
    "else the OS user)"
)


JSON_DECISION_HELP = (
    "what became of the decision as JSON: outcome (applied, refused, sent), the refusal's "
    "code and sentence, the run's log entry (a list with --all)"
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
        command.add_argument("--json", action="store_true", help=JSON_DECISION_HELP)
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
    revoke.add_argument("--json", action="store_true", help=JSON_DECISION_HELP)
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
    add_insight_commands(add)  # audit (one run, or a range: export), stats
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
    add_policy_parser(add)
    # The worker's options are read by `hitl worker` itself (admin.cmd_worker), which
    # imports the worker's modules: none of them load for the other commands.
    sub.add_parser(
        "worker", help=WORKER_DESCRIPTION, description=WORKER_DESCRIPTION, add_help=False
    ).add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    return parser


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], Awaitable[int]]] = {
    "pending": cmd_pending,
    "show": cmd_show,
    "approve": cmd_approve,
    "reject": cmd_reject,
    "modify": cmd_modify,
    "review": cmd_review,
    "runs": cmd_runs,
    "audit": cmd_audit,
    "stats": cmd_stats,
    "revoke": cmd_revoke,
    "bridge": cmd_bridge,
}


async def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "worker":
        parser.parse_args(argv)  # says what was not understood, and exits 2
    try:
        if args.command == "doctor":
            return await cmd_doctor(args)
        if args.command == "worker":
            return await cmd_worker(args, rest)
        if args.command == "reviewers":
            return await cmd_reviewers(args)
        if args.command == "codec":
            return await cmd_codec(args)
        if args.command == "serve":
            return await cmd_serve(args)
        if args.command == "policy":
            return await cmd_policy(args)  # connects only when it reads from Temporal
        if args.command == "bridge" and args.transport == "send":
            return await send_command(args)  # a reviewer's machine: Redis, no Temporal
        settings = load_settings()
        try:
            client = await connect(settings)
        except RuntimeError as error:
            raise CliError(down(settings, error)) from error
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
        found = isinstance(error, (ApprovalNotFound, RunNotFound))
        return form_of(RefusalCode.NOT_FOUND).exit if found else USAGE
    except RPCError as error:
        if args.debug:
            traceback.print_exc()
        print(f"hitl: Temporal refused the request: {first_line(error)}", file=sys.stderr)
        return USAGE


def main() -> None:
    run_main(run)
