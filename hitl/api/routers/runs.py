"""/runs: start an agent run, list runs, and one run's audit."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Path, Query
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from hitl import contract
from hitl.api.deps import ANONYMOUS, State, Who
from hitl.api.errors import ApiError, responses, rpc_problem
from hitl.api.schemas import RunDetail, RunSummary, StartBody, Started
from hitl.models import ModelSettings, RunInput
from hitl.starting import signed_input
from hitl.text import quoted
from hitl.toolkits.workspace import split_path
from hitl.tools import ToolError

router = APIRouter(prefix="/runs", tags=["runs"], responses=responses(401, 404, 422, 503))


@router.post(
    "",
    response_model=Started,
    status_code=201,
    summary="Start a run",
    responses=responses(400, 403, 409),
)
async def start_run(state: State, who: Who, body: StartBody) -> Started:
    """Start an agent run asked for by the token's reviewer.

    The run's input says who asked (`requested_by`) and is signed as `api` with the
    server's key, so the worker can prove it: that reviewer may then not approve the
    run's actions (separation of duties). The workspace must be under the server's
    `HITL_WORKSPACE_ROOT`; without one, starting runs here is off (403).
    """
    if state.workspace_root is None:
        raise ApiError(
            403,
            "starting runs through the API is off: set HITL_WORKSPACE_ROOT on `hitl serve` to "
            "the folder the workers see the workspaces in",
        )
    workspace = _under(state.workspace_root, body.workspace)
    requested_by = who.name or ANONYMOUS
    model = ModelSettings(provider="scripted", script=body.script)
    if body.model not in (None, "scripted") and body.script is None:
        model = ModelSettings(provider="openai", name=body.model)
    workflow_id = body.id or f"agent-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    run = signed_input(
        RunInput(
            task=body.task,
            workspace=workspace,
            model=model,
            max_steps=body.max_steps,
            approval_timeout_seconds=body.approval_timeout_seconds,
            auto_approve_below=body.auto_approve_below,
            tool_names=body.tools,
            origin={"started_by": "hitl serve", "reviewer": requested_by},
            # The check above is on the name; the worker reaches the folder from the root
            # without following a link, so one planted under the root can't lead out.
            workspace_root=str(state.workspace_root),
        ),
        workflow_id,
        requested_by,
        state.reviews.signer or None,
    )
    try:
        handle = await state.reviews.client.start_workflow(
            contract.WORKFLOW_NAME,
            run,
            id=workflow_id,
            task_queue=state.task_queue,
            static_summary=body.task[:400],
            # A workflow id names one request: the audit of an id gathers every run under
            # it, so a reviewer must not add a run of theirs to someone else's finished one.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise ApiError(
            409, f"a run with id {workflow_id!r} is already running or has run; choose another id"
        ) from None
    except RPCError as error:
        raise rpc_problem(error) from error
    return Started(
        id=handle.id,
        run_id=handle.result_run_id or "",
        requested_by=requested_by,
        signed=run.start_signature is not None,
    )


def _under(root: PurePosixPath, asked: str) -> str:
    """`asked` as a folder under `root`: the names along it as the workspace tools read a
    path (`split_path`, the one copy of those checks), refused if it leads anywhere else."""
    try:
        parts = split_path(asked)
    except ToolError as error:
        raise ApiError(
            400,
            f"workspace {quoted(asked)} must be a folder under the server's workspace root, "
            f"given relative to it (e.g. `demo`), with no `..`: {error}",
        ) from None
    return str(root.joinpath(*parts))


@router.get("", response_model=list[RunSummary], summary="List runs")
async def list_runs(
    state: State,
    who: Who,
    run_state: Annotated[
        str | None,
        Query(
            alias="state",
            pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
            description="running, awaiting_approval, completed, step_limit, ...",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[RunSummary]:
    """Workflows that use the gate, newest first. A run without a title of its own is
    titled by its first pending approval, shown only to who may read that tool's."""
    listed = []
    config = state.config  # read once for the page, not once per run
    for run in await state.reviews.runs(run_state, limit):
        tool = run.pop("task_tool", None)
        if tool is not None and not who.may_read(config, tool):
            run["task"] = ""
        listed.append(RunSummary(**run))
    return listed


@router.get("/{workflow_id}", response_model=RunDetail, summary="One run's audit")
async def get_run(
    state: State, who: Who, workflow_id: Annotated[str, Path(max_length=1000)]
) -> RunDetail:
    """Where the run stands, every approval with every decision, and refused decisions.
    Only approvals of tools this reviewer may read are shown; the refused decisions that
    named no approval (excerpts of whatever was sent) only to a reviewer who may read
    every tool (`tools` or `read` holding "*")."""
    audit = await state.reviews.audit(workflow_id)
    config = state.config
    return RunDetail(
        id=audit.workflow_id,
        status=audit.status,
        runs=audit.runs,
        approvals=[r for r in audit.approvals if who.may_read(config, r.action_json.tool)],
        refused_decisions=audit.refused if who.may_read(config, "*") else [],
    )
