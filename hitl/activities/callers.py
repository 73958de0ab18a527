"""Who may ask this worker's activities for anything: the workflows of its own deployment.

Temporal lets any client that may start things start an activity with no workflow at
all (a standalone activity), and any workflow schedule any activity on any task queue,
so a workflow an attacker serves on a queue of their own can ask this worker's queue
for `run_tool` with an approval id they made up, `read_file` with `/` as its
workspace, or a model call paid with the worker's key. Activity tasks say who
scheduled them, and the server fills that in, so the worker checks it:

- a local activity was scheduled by workflow code in this very process: trusted;
- a standalone activity (no workflow) is refused;
- otherwise the scheduling workflow's task queue must be one whose workflows this
  deployment runs: the worker's own queue (a worker that runs workflows), plus
  `HITL_WORKFLOW_QUEUES` (comma-separated); a tools-only worker with neither trusts
  the default queue (`hitl-agents`).

An approved action's `run_tool` also asks its run, by query, whether that approval was
settled for exactly this action (`approval_refusal`): the run is trusted code, so its
answer is.

This holds while the attacker's workers don't poll the deployment's own queues: a
worker that takes this queue's workflow tasks runs the runs, and Temporal's own
authorization is the only thing that can keep it out.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable

import structlog
from temporalio import activity
from temporalio.client import WorkflowQueryFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from hitl import contract
from hitl.models import ApprovalRecord, ApprovalStatus, ToolAction, canonical_json

log = structlog.get_logger("hitl.callers")

WORKFLOW_QUEUES_ENV = "HITL_WORKFLOW_QUEUES"
GUARDED = frozenset(
    {
        contract.ACTIVITY_LLM,
        contract.ACTIVITY_PREVIEW,
        contract.ACTIVITY_RUN_TOOL,
        contract.ACTIVITY_NOTIFY,
        contract.ACTIVITY_NOTIFY_EVENT,
        contract.ACTIVITY_CHECK_TOOL,
        contract.ACTIVITY_VERIFY_DECISION,
        contract.ACTIVITY_VERIFY_START,
    }
)
"""The activities that act, spend or answer on the worker's behalf: the plugin's, and the
model call of an agent served beside them (`describe_tools` only lists what the worker
has)."""
MAX_REMEMBERED_RUNS = 2_000
UNTRUSTED = "UntrustedCaller"


def workflow_queues(environ: dict[str, str] | None = None) -> frozenset[str]:
    text = (os.environ if environ is None else environ).get(WORKFLOW_QUEUES_ENV, "")
    return frozenset(item.strip() for item in text.split(",") if item.strip())


class CallerCheck:
    """Decides whether the activity now running was asked for by a trusted workflow."""

    def __init__(self, queues: Iterable[str] = (), *, own_queue: bool = True) -> None:
        self.queues = frozenset(queues)
        self.own_queue = own_queue
        """Whether the worker's own queue counts: it does for a worker that runs workflows;
        on a tools-only worker nobody competes for that queue's workflow tasks, so a
        workflow there could be anyone's."""
        self._queue_of: OrderedDict[str, str] = OrderedDict()

    def trusted(self, queue: str) -> bool:
        info = activity.info()
        if self.own_queue and queue == info.task_queue:
            return True
        if self.queues:
            return queue in self.queues
        return not self.own_queue and queue == contract.DEFAULT_TASK_QUEUE

    async def refusal(self) -> str | None:
        info = activity.info()
        if info.is_local:
            return None
        if not info.workflow_id or not info.workflow_run_id:
            return (
                f"{info.activity_type} runs only for the workflows of this deployment; it was "
                "started on its own (a standalone activity), so nothing was done"
            )
        queue = self._queue_of.get(info.workflow_run_id)
        if queue is None:
            handle = activity.client().get_workflow_handle(
                info.workflow_id, run_id=info.workflow_run_id
            )
            queue = (await handle.describe()).task_queue
            self._queue_of[info.workflow_run_id] = queue
            while len(self._queue_of) > MAX_REMEMBERED_RUNS:
                self._queue_of.popitem(last=False)
        if self.trusted(queue):
            return None
        return (
            f"{info.activity_type} runs only for the workflows of this deployment; it was "
            f"asked for by {info.workflow_type} on task queue {queue!r}, which is not one "
            f"(the worker's own queue and {WORKFLOW_QUEUES_ENV} are), so nothing was done"
        )


class TrustedCallers(Interceptor):
    """Refuses the plugin's activities to callers outside the deployment (`CallerCheck`).

    `names`: the activities guarded (default `GUARDED`); the plugin leaves out those you
    replaced with your own, which are yours to guard."""

    def __init__(self, check: CallerCheck, names: Iterable[str] = GUARDED) -> None:
        self.check = check
        self.names = frozenset(names)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Guard(next, self.check, self.names)


class _Guard(ActivityInboundInterceptor):
    def __init__(
        self, next: ActivityInboundInterceptor, check: CallerCheck, names: frozenset[str]
    ) -> None:
        super().__init__(next)
        self.check = check
        self.names = names

    async def execute_activity(self, input: ExecuteActivityInput) -> object:
        info = activity.info()
        if info.activity_type in self.names:
            refusal = await self.check.refusal()
            if refusal is not None:
                log.warning(
                    "activity.refused",
                    activity=info.activity_type,
                    workflow_id=info.workflow_id,
                    workflow_type=info.workflow_type,
                    refused=refusal,
                )
                raise ApplicationError(refusal, type=UNTRUSTED, non_retryable=True)
        return await super().execute_activity(input)


async def approval_refusal(approval_id: str, action: ToolAction) -> str | None:
    """Why the run that asked for this action has not approved it under `approval_id`
    (None: it has). Asked of the run itself, by query, from inside the activity."""
    info = activity.info()
    if info.is_local:
        return None
    handle = activity.client().get_workflow_handle(
        info.workflow_id or "", run_id=info.workflow_run_id
    )
    try:
        try:
            records = await handle.query(
                contract.QUERY_APPROVALS, {"ids": [approval_id]}, result_type=list[ApprovalRecord]
            )
        except WorkflowQueryFailedError:
            # Version 1 runs answer the query without a selector.
            records = await handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    except WorkflowQueryFailedError as error:
        return f"its run does not say which approvals it settled ({error.message})"
    except RPCError as error:
        # The run's worker may be restarting: Temporal's retry policy asks again.
        raise ApplicationError(
            f"the run could not be asked about approval {approval_id}: {error.message}"
        ) from None
    record = next((r for r in records if r.id == approval_id), None)
    if record is None:
        return f"the run has no approval {approval_id}"
    if record.status not in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED):
        return f"approval {approval_id} is {record.status.value}, not approved"
    approved = canonical_json(record.effective_action.model_dump(mode="json"))
    if approved != canonical_json(action.model_dump(mode="json")):
        return f"approval {approval_id} approved another action than this one"
    return None
