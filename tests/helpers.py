"""What the tests do to a run: start it, wait for approvals, decide, read records."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    HandleQueryInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from hitl import contract
from hitl.devserver import temporal_binary
from hitl.models import (
    ApprovalRecord,
    ModelSettings,
    RunInput,
    RunResult,
    RunStatus,
    ScriptedTurn,
    ToolCall,
)
from hitl.plugin import HitlPlugin
from hitl.reviewers import decision_keys
from hitl.starting import signed_input

CLEANUP_TASK = "Delete all log files older than 7 days"


def turn(*calls: tuple[str, Any], content: str = "") -> ScriptedTurn:
    """A scripted turn; a call's arguments may be a dict or raw (possibly broken) text."""
    return ScriptedTurn(
        content=content,
        tool_calls=[
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:8]}",
                name=name,
                arguments=args if isinstance(args, str) else json.dumps(args),
            )
            for name, args in calls
        ],
    )


async def start_run(
    client: Client,
    task_queue: str,
    workspace: Path,
    task: str = CLEANUP_TASK,
    script: list[ScriptedTurn] | None = None,
    **overrides: Any,
) -> WorkflowHandle[Any, RunResult]:
    """Start an agent run the way a client does.

    Where this process holds the review API's key (`HITL_DECISION_KEYS` has `api:…`, as
    for a worker that takes only signed decisions), the start is signed as the API signs
    it for an authenticated reviewer (`requested_by`, default "tester"); `signing=None`
    starts it unsigned.
    """
    workflow_id = overrides.pop("id", None) or f"test-{uuid.uuid4().hex[:12]}"
    signing = overrides.pop("signing", "auto")
    run = RunInput(
        task=task,
        workspace=str(workspace),
        model=overrides.pop("model", None) or ModelSettings(provider="scripted", script=script),
        **overrides,
    )
    if signing == "auto":
        keys = decision_keys()
        signing = ("api", keys["api"]) if "api" in keys else None
    if signing is not None:
        run = signed_input(run, workflow_id, run.requested_by or "tester", signing)
    return await client.start_workflow(
        contract.WORKFLOW_NAME,
        run,
        id=workflow_id,
        task_queue=task_queue,
        result_type=RunResult,
    )


async def status(handle: WorkflowHandle) -> RunStatus:
    return await handle.query(contract.QUERY_STATUS, result_type=RunStatus)


async def approvals(handle: WorkflowHandle) -> list[ApprovalRecord]:
    return await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])


async def wait_pending(
    handle: WorkflowHandle, count: int = 1, timeout: float = 20
) -> list[ApprovalRecord]:
    """The pending approvals, once there are `count` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pending = [r for r in await approvals(handle) if r.status.value == "pending"]
        if len(pending) >= count:
            return pending
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {count} pending approvals, have {len(pending)}")
        await asyncio.sleep(0.05)


async def wait_decisions(
    handle: WorkflowHandle, approval_id: str | None, count: int, timeout: float = 10
) -> Any:
    """The decision log of an approval (or the run's refused decisions) once it has `count`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if approval_id is None:
            log: list[Any] = (await status(handle)).refused_decisions
        else:
            log = next(r for r in await approvals(handle) if r.id == approval_id).decisions
        if len(log) >= count:
            return log
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {count} decisions, have {len(log)}: {log}")
        await asyncio.sleep(0.05)


def decision(approval_id: str, reviewer: str = "alice", **fields: Any) -> dict[str, Any]:
    return {"approval_id": approval_id, "reviewer": reviewer, **fields}


async def temporal_cli(*args: str, timeout: float = 30) -> str:
    """Run the `temporal` CLI without blocking the event loop the test's worker runs on."""
    process = await asyncio.create_subprocess_exec(
        temporal_binary(),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, f"temporal {' '.join(args)} failed: {err.decode()}"
    return out.decode()


async def assert_replays(handle: WorkflowHandle, workflows: Sequence[type] = ()) -> None:
    """The recorded history replays deterministically on today's workflow code."""
    from workflows import ALL_WORKFLOWS

    replayer = Replayer(
        workflows=[*ALL_WORKFLOWS, *workflows],
        data_converter=pydantic_data_converter,
        plugins=[HitlPlugin()],
    )
    await replayer.replay_workflow(await handle.fetch_history())


def split_after_local_activity(history: WorkflowHistory) -> bool:
    """Whether a local activity's marker ended its workflow task (what the workflow did
    with the result is in the next one): the split `SlowQueries` makes a replay survive."""
    events = history.events
    return any(
        event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
        and following.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
        for event, following in pairwise(events)
    )


class SlowQueries(Interceptor):
    """Answers each query a moment late, as a busy worker may: a local activity started in
    the same workflow task finishes first. A query that waited at the server for that task
    then completes it early, the activity's marker in it and what the workflow did with
    the result in the next task: the split a replay must survive."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _SlowQueriesInbound


class _SlowQueriesInbound(WorkflowInboundInterceptor):
    def handle_query(self, input: HandleQueryInput) -> Any:
        time.sleep(0.2)
        return super().handle_query(input)


async def continue_as_new_by_junk(client: Client, handle: WorkflowHandle) -> WorkflowHandle:
    """Junk decisions (refused, each kept in the log) grow the run's history until it
    continues as new (a run started with small `RunLimits.continue_as_new_events`); the
    chain's latest run, once it has."""
    first_run = (await handle.describe()).run_id
    latest = client.get_workflow_handle(handle.id, result_type=RunResult)
    for batch in range(40):
        await asyncio.gather(
            *(
                latest.signal(contract.SIGNAL_APPROVE, decision(f"apr_junk{batch}_{i}"))
                for i in range(10)
            )
        )
        await asyncio.sleep(0.1)
        if (await latest.describe()).run_id != first_run:
            return latest
    raise AssertionError("the run never continued as new")
