"""Install approvals the Temporal way: one plugin object for client and worker.

    from hitl.plugin import HitlPlugin

    plugin = HitlPlugin(tools=["myapp.tools"])          # or tools=[refund, ...]
    client = await Client.connect("localhost:7233", plugins=[plugin])
    worker = Worker(client, task_queue="agents", workflows=[MyWorkflow])

The plugin adds the pydantic data converter (keeping any payload codec you set), the
gate's and the tools' activities (`hitl.activities`), a sandbox that passes the
project's modules through, an interceptor that ends each workflow's gate with the
workflow (final state published, last notifications sent), and, when the worker starts,
a check that the namespace has the search attributes the gate publishes (registered if
missing and allowed). Workflows are yours to register (the reference agent's worker.py
registers `AgentWorkflow` and its model call). Replay histories with the same plugin
(`Replayer(workflows=..., plugins=[HitlPlugin()])`). Approval telemetry comes with
Temporal's `OpenTelemetryPlugin` on the same client (docs/telemetry.md). Like
`temporalio-openai-agents`' `OpenAIAgentsPlugin`, it is built on `temporalio.plugin`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client, ClientConfig
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultPayloadConverter
from temporalio.plugin import SimplePlugin
from temporalio.service import RPCError
from temporalio.worker import Worker, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from hitl import contract
from hitl.activities import library_activities
from hitl.activities.callers import GUARDED, CallerCheck, TrustedCallers
from hitl.activities.callers import workflow_queues as queues_from_env
from hitl.activities.calls import ACTIVITY_CHECK_CALL, CallActivities
from hitl.codec import codec_from_env
from hitl.gate import GateInterceptor, WorkerVisibility
from hitl.tools import Previewer, PreviewFn, Tool, ToolRegistry, load_previewers, load_tools
from hitl.visibility import ensure_search_attributes, missing_search_attributes

log = structlog.get_logger("hitl.plugin")

PLUGIN_NAME = "hitl-agents"
OPENAI_AGENTS_PLUGIN = "OpenAIAgentsPlugin"
"""`temporalio-openai-agents`' plugin, which must come before this one."""


def _pydantic(existing: DataConverter | None) -> DataConverter:
    converter = existing or DataConverter.default
    if converter.payload_converter_class is DefaultPayloadConverter:
        # The gate's models travel as pydantic JSON; a codec (encryption) stays as set.
        converter = dataclasses.replace(converter, payload_converter_class=PydanticPayloadConverter)
    elif converter.payload_converter_class.__name__ == "OpenAIPayloadConverter":
        # OpenAIAgentsPlugin's drops fields never assigned (a record's decision log).
        from hitl.integrations.openai_agents import HitlOpenAIPayloadConverter

        converter = dataclasses.replace(
            converter, payload_converter_class=HitlOpenAIPayloadConverter
        )
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

    - `tools`: tool modules (`"myapp.tools"`, `"builtin"` for the built-in toolkits),
      `Tool`s, or a `ToolRegistry`; none by default: the plugin alone serves a gate
      whose workflows run their own activities.
    - `tools_only`: only the tools' activities (no notifications, no verification): a
      worker that runs commands and holds no secrets.
    - `activities`: activities of yours served beside the plugin's; one named like one
      of the plugin's replaces it (for example your own `notify_approval`).
    - `workflow_queues`: the task queues whose workflows may use this worker's
      activities besides its own (default `HITL_WORKFLOW_QUEUES`; a tools-only worker
      with none serves `hitl-agents`'s). A standalone activity, or a workflow on any
      other queue, is refused (`hitl/activities/callers.py`).
    - `previewers`: the worker's previews (and risk) of tools that are not `hitl` tools
      (a framework's function tools), by tool name: `{"send_invoice": fn}` with
      `fn(args) -> ToolPreview | (ToolPreview, risk)`, sync or async, or module names
      and `Previewer`s made with `@hitl.tools.previewer("send_invoice")`. They run in the
      `check_call` activity `ApprovalGate.ask` runs first; a tool without one is shown
      as its name and arguments.

    Your own workflows that use `hitl.gate.ApprovalGate` need nothing registered for
    the gate: `HitlPlugin()` is enough. With `temporalio-openai-agents`, put it after
    `OpenAIAgentsPlugin` (`hitl.integrations.openai_agents`).
    """

    def __init__(
        self,
        tools: Sequence[str | Tool] | ToolRegistry | None = None,
        *,
        tools_only: bool = False,
        activities: Sequence[Callable[..., Any]] = (),
        register_search_attributes: bool = True,
        workflow_queues: Sequence[str] | None = None,
        previewers: Mapping[str, PreviewFn] | Sequence[str | Previewer] | None = None,
    ) -> None:
        if isinstance(tools, ToolRegistry):
            self.registry = tools
        else:
            self.registry = load_tools(tools) if tools is not None else ToolRegistry()
        self.previewers = load_previewers(previewers)
        ours = library_activities(self.registry, tools_only=tools_only)
        if not tools_only:
            ours.extend(CallActivities(self.previewers).all())
        given = {activity_name(item) for item in activities}
        # Only a replaced library activity leaves the guard: the user's own stands in.
        replaced = given & {activity_name(item) for item in ours}
        self.activities_added = [
            *[item for item in ours if activity_name(item) not in given],
            *activities,
        ]
        self._register = register_search_attributes and not tools_only
        self._client: Client | None = None
        self._visibility = WorkerVisibility()
        super().__init__(
            PLUGIN_NAME,
            data_converter=_pydantic,
            activities=self.activities_added,
            workflow_runner=_sandbox,
            interceptors=[
                GateInterceptor(self._visibility),
                # The worker's activities serve only the deployment's own workflows: not a
                # standalone activity, nor a workflow someone serves on a queue of theirs.
                TrustedCallers(
                    CallerCheck(
                        workflow_queues if workflow_queues is not None else queues_from_env(),
                        own_queue=not tools_only,
                    ),
                    (GUARDED | {ACTIVITY_CHECK_CALL}) - replaced,
                ),
            ],
            run_context=self._run_context,
        )

    def configure_client(self, config: ClientConfig) -> ClientConfig:
        plugins = list(config.get("plugins") or [])
        later = plugins[plugins.index(self) + 1 :] if self in plugins else []
        if any(plugin.name() == OPENAI_AGENTS_PLUGIN for plugin in later):
            # OpenAIAgentsPlugin refuses any payload converter set before it.
            raise ValueError(
                "put HitlPlugin after OpenAIAgentsPlugin: "
                "plugins=[OpenAIAgentsPlugin(...), HitlPlugin(...)]"
            )
        return super().configure_client(config)

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        self._client = config.get("client")
        config.setdefault("graceful_shutdown_timeout", timedelta(seconds=10))
        return super().configure_worker(config)

    @asynccontextmanager
    async def _run_context(self) -> AsyncIterator[None]:
        if self._client is not None:
            if self._register:
                missing = await check_search_attributes(self._client)
            else:
                try:
                    missing = await missing_search_attributes(self._client)
                except RPCError:
                    missing = [key.name for key in contract.SEARCH_ATTRIBUTES]
            # A run upserting an attribute the namespace lacks fails its workflow task until
            # someone registers it: runs started here stamp their changes only if it exists.
            self._visibility.updated_at = contract.UPDATED_AT_KEY.name not in missing
        yield


async def check_search_attributes(client: Client) -> list[str]:
    """Register the gate's search attributes if missing; say exactly how if not allowed.

    Returns those still missing (all of them when the server can't say)."""
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
        return missing
    if added:
        log.info("search_attributes.registered", names=added)
    return []


def search_attribute_commands(namespace: str, names: Sequence[str]) -> list[str]:
    kinds = {key.name: key.indexed_value_type.name for key in contract.SEARCH_ATTRIBUTES}
    words = {
        "KEYWORD": "Keyword",
        "INT": "Int",
        "KEYWORD_LIST": "KeywordList",
        "DATETIME": "Datetime",
    }
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
    workflows: Sequence[type] = (),
    activities: Sequence[Callable[..., Any]] = (),
    workflow_queues: Sequence[str] | None = None,
    previewers: Mapping[str, PreviewFn] | Sequence[str | Previewer] | None = None,
    **options: Any,
) -> Worker:
    """A worker on `task_queue` serving `workflows` and `activities` with `HitlPlugin`
    over these tools and previewers (see there), plus `Worker` `options`."""
    plugin = HitlPlugin(
        tools,
        tools_only=tools_only,
        activities=activities,
        workflow_queues=workflow_queues,
        previewers=previewers,
    )
    return Worker(client, task_queue=task_queue, workflows=workflows, plugins=[plugin], **options)


def activity_name(item: Callable[..., Any]) -> str:
    """The name Temporal knows an activity function by (its `@activity.defn` name)."""
    definition = getattr(item, "__temporal_activity_definition", None)
    return definition.name if definition is not None else getattr(item, "__name__", "")
