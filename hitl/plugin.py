"""Install approvals the Temporal way: one plugin object for client and worker.

    from hitl.plugin import HitlPlugin

    plugin = HitlPlugin(tools=["myapp.tools"])          # or tools=[refund, ...]
    client = await Client.connect("localhost:7233", plugins=[plugin])
    worker = Worker(client, task_queue="agents", workflows=[MyWorkflow])

The plugin adds the pydantic data converter (keeping any payload codec you set), the
gate's and the tools' activities, the reference `AgentWorkflow`, a sandbox that passes
the project's modules through, an interceptor that ends each workflow's gate with the
workflow (final state published, last notifications sent), and, when the worker starts,
a check that the namespace has the search attributes the gate publishes (registered if
missing and allowed). Replay histories with the same plugin (`Replayer(workflows=...,
plugins=[HitlPlugin()])`). Like
`temporalio-openai-agents`' `OpenAIAgentsPlugin`, it is built on `temporalio.plugin`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.plugin import SimplePlugin
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities import worker_activities
from activities.callers import GUARDED, CallerCheck, TrustedCallers
from activities.callers import workflow_queues as queues_from_env
from hitl import contract
from hitl.codec import codec_from_env
from hitl.gate import GateInterceptor
from hitl.tools import Tool, ToolRegistry, load_tools
from hitl.visibility import ensure_search_attributes, missing_search_attributes
from workflows import ALL_WORKFLOWS

log = structlog.get_logger("hitl.plugin")

PLUGIN_NAME = "hitl-agents"


def _pydantic(existing: DataConverter | None) -> DataConverter:
    converter = existing or DataConverter.default
    if converter.payload_converter_class is DefaultPayloadConverter:
        # The gate's models travel as pydantic JSON; a codec (encryption) stays as set.
        converter = dataclasses.replace(converter, payload_converter_class=PydanticPayloadConverter)
    if converter.payload_codec is None:
        codec = codec_from_env()
        if codec is not None:
            converter = dataclasses.replace(converter, payload_codec=codec)
    return converter


def _sandbox(existing: WorkflowRunner | None) -> WorkflowRunner:
    """The default sandbox, with modules passed through instead of re-imported per run.

    Measured by `make bench` (docs/benchmarks.md): less memory per cached run and a
    better p99, at about 1.5 ms more at p50. A runner you configured yourself is kept.
    """
    if existing is None or (
        isinstance(existing, SandboxedWorkflowRunner)
        and existing.restrictions is SandboxRestrictions.default
    ):
        return SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        )
    return existing


class HitlPlugin(SimplePlugin):
    """Human-in-the-loop approvals on a Temporal client and its workers.

    - `tools`: tool modules (`"myapp.tools"`, `"builtin"`), `Tool`s, or a `ToolRegistry`;
      None means the built-in toolkits.
    - `tools_only`: only the tools' activities (no workflows, no model, no
      notifications): a worker that runs commands and holds no secrets.
    - `agent_workflow`: register the reference `AgentWorkflow` (default True); your own
      workflows that use `hitl.gate.ApprovalGate` need nothing registered for the gate.
    - `activities`: activities of yours that replace the plugin's of the same name
      (for example your own `notify_approval`).
    - `workflow_queues`: the task queues whose workflows may use this worker's
      activities besides its own (default `HITL_WORKFLOW_QUEUES`; a tools-only worker
      with none serves `hitl-agents`'s). A standalone activity, or a workflow on any
      other queue, is refused (`activities/callers.py`).
    """

    def __init__(
        self,
        tools: Sequence[str | Tool] | ToolRegistry | None = None,
        *,
        tools_only: bool = False,
        agent_workflow: bool = True,
        activities: Sequence[Callable[..., Any]] = (),
        register_search_attributes: bool = True,
        workflow_queues: Sequence[str] | None = None,
    ) -> None:
        self.registry = tools if isinstance(tools, ToolRegistry) else load_tools(tools)
        ours = worker_activities(self.registry, tools_only=tools_only)
        replaced = {_activity_name(item) for item in activities}
        self.activities_added = [
            *[item for item in ours if _activity_name(item) not in replaced],
            *activities,
        ]
        self._register = register_search_attributes and not tools_only
        self._client: Client | None = None
        super().__init__(
            PLUGIN_NAME,
            data_converter=_pydantic,
            activities=self.activities_added,
            workflows=[] if tools_only or not agent_workflow else list(ALL_WORKFLOWS),
            workflow_runner=_sandbox,
            interceptors=[
                GateInterceptor(),
                # The worker's activities serve only the deployment's own workflows: not a
                # standalone activity, nor a workflow someone serves on a queue of theirs.
                TrustedCallers(
                    CallerCheck(
                        workflow_queues if workflow_queues is not None else queues_from_env(),
                        own_queue=not tools_only,
                    ),
                    GUARDED - replaced,
                ),
            ],
            run_context=self._run_context,
        )

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        self._client = config.get("client")
        config.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
        return super().configure_worker(config)

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        if self._register and self._client is not None:
            await check_search_attributes(self._client)
        yield


async def check_search_attributes(client: Client) -> None:
    """Register the gate's search attributes if missing; say exactly how if not allowed."""
    try:
        added = await ensure_search_attributes(client)
    except RPCError as error:
        # The worker still runs: the gate works without them, only listings suffer.
        try:
            missing = await missing_search_attributes(client)
        except RPCError:
            missing = [key.name for key in contract.SEARCH_ATTRIBUTES]
        if missing:
            log.error(
                "search_attributes.missing",
                missing=missing,
                error=error.message,
                fix="; ".join(search_attribute_commands(client.namespace, missing)),
            )
        return
    if added:
        log.info("search_attributes.registered", names=added)


def search_attribute_commands(namespace: str, names: Sequence[str]) -> list[str]:
    kinds = {key.name: key.indexed_value_type.name for key in contract.SEARCH_ATTRIBUTES}
    words = {"KEYWORD": "Keyword", "INT": "Int", "KEYWORD_LIST": "KeywordList"}
    return [
        f"temporal operator search-attribute create --namespace {namespace} --name {name} "
        f"--type {words[kinds[name]]}"
        for name in names
    ]


def build_worker(
    client: Client,
    task_queue: str,
    *,
    tools: Sequence[str | Tool] | ToolRegistry | None = None,
    tools_only: bool = False,
    activities: Sequence[Callable[..., Any]] = (),
    workflow_queues: Sequence[str] | None = None,
    **options: Any,
) -> Worker:
    """The project's worker on `task_queue`: `HitlPlugin` with these tools, plus `options`."""
    plugin = HitlPlugin(
        tools, tools_only=tools_only, activities=activities, workflow_queues=workflow_queues
    )
    return Worker(client, task_queue=task_queue, plugins=[plugin], **options)


def _activity_name(item: Callable[..., Any]) -> str:
    definition = getattr(item, "__temporal_activity_definition", None)
    return definition.name if definition is not None else getattr(item, "__name__", "")
