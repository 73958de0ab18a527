"""The commands that set things up and run services: doctor, reviewers, codec, bridge,
serve, worker. Services import their heavy modules (the worker's toolkits and the model
client, the API's FastAPI) inside the command, so `hitl pending` never loads them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    GetSystemInfoRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError

from hitl import contract
from hitl.bridge import run_bridge
from hitl.cli.common import APPLIED, REFUSED, CliError, down, first_line
from hitl.codec import CODEC_KEY_ENV, OLD_KEYS_ENV, codec_from_env
from hitl.codec import new_key as new_codec_key
from hitl.config import (
    NOT_INSTALLED,
    ConfigError,
    choose_model,
    connect,
    describe_connection,
    load_settings,
    package_versions,
)
from hitl.devserver import temporal_version
from hitl.models import DEFAULT_APPROVAL_TIMEOUT_SECONDS
from hitl.policy import duration_text
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
from hitl.reviews import polling_lately
from hitl.text import visible
from hitl.visibility import missing_search_attributes


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
        + f"; approval timeout {duration_text(timeout)}"
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
    from hitl.telemetry import TelemetryConfigError, install

    try:
        telemetry = install("hitl-api", worker=False)
    except TelemetryConfigError as error:
        sock.close()
        raise CliError(str(error)) from error
    try:
        client = await connect(settings, telemetry)
    except RuntimeError as error:
        sock.close()
        raise CliError(down(settings, error)) from error
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
        telemetry=telemetry,
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
    try:
        await server.serve(sockets=[sock])
    finally:
        if telemetry is not None:  # what is left goes out before the process ends
            await asyncio.to_thread(telemetry.shutdown)
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
        _say(f"server        DOWN: nothing answers at {settings.address} ({first_line(error)})")
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
        from hitl.plugin import search_attribute_commands  # the worker's: heavy

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


def _say(line: str) -> None:
    """A line of doctor's report: values from the environment, the config file, the server
    and whoever polls the task queue, escaped (the labels are plain ASCII: unchanged)."""
    print(visible(line))


WORKER_DESCRIPTION = (
    "run a worker: the gate's tools (--tools MODULES) and your workflows (--workflows MODULES)"
)


async def cmd_worker(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """`hitl worker ...`: its options are the worker's own, read here, where the worker's
    modules (the toolkits, the model client) are imported."""
    from hitl.runworker import add_worker_arguments, run_worker

    parser = add_worker_arguments(
        argparse.ArgumentParser(prog="hitl worker", description=WORKER_DESCRIPTION)
    )
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    return await run_worker(parser.parse_args(rest))
