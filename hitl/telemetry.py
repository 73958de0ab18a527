"""Approval telemetry: a span per approval, and counts of requests, outcomes and waits.

Off unless the environment turns it on; off, nothing is installed and nothing exported.

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT` / `..._METRICS_ENDPOINT`): spans
  and metrics go out over OTLP/HTTP (protobuf), with the exporters' own `OTEL_*` settings
  (headers, intervals); `OTEL_SERVICE_NAME` names the process (default `hitl-worker`,
  `hitl-api`). `OTEL_SDK_DISABLED=true` turns everything off.
- `HITL_PROMETHEUS=1`: the same metrics as Prometheus text, for teams without a collector:
  a worker serves them on `HITL_METRICS_HOST:HITL_METRICS_PORT` (127.0.0.1:9464), the
  review API at `/metrics` (a reviewer's token, like every other route).

Spans are Temporal's own: `temporalio.contrib.opentelemetry.OpenTelemetryPlugin` on the
client, with the replay-safe tracer provider (`create_tracer_provider`), so a run has a
trace (`RunWorkflow:...`) that every approval span of the run joins, and a span that ends
while a history is replayed is never exported. The gate's side (`ApprovalTelemetry`) is
workflow code: it issues no command, reads no clock but the workflow's, and counts with
`workflow.metric_meter()`, which records nothing during replay; the worker exports those
counts through its `Runtime` (a `MetricBuffer` drained into the OpenTelemetry SDK by the
SDK's `MetricsExporter`). Attributes are bounded and never carry arguments, reasons,
previews or anything a model wrote beyond the tool's name (one of the worker's tools).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import opentelemetry.context
from opentelemetry import trace
from temporalio import workflow

from hitl.models import ApprovalRecord, ApprovalStatus

if TYPE_CHECKING:
    from temporalio.common import MetricCounter, MetricHistogramFloat
    from temporalio.runtime import Runtime

__all__ = [
    "OUTCOMES",
    "ApprovalTelemetry",
    "Telemetry",
    "TelemetryConfigError",
    "TelemetrySettings",
    "install",
    "settings_from_env",
]

TRACER_NAME = "hitl"
SPAN_NAME = "hitl.approval"
REQUESTS = "hitl.approval.requests"
OUTCOMES_METRIC = "hitl.approval.outcomes"
TIME_TO_DECIDE = "hitl.approval.time_to_decide"
EXPIRIES = "hitl.approval.expiries"
PENDING = "hitl.approvals.pending"
OUTCOMES = ("approved", "modified", "rejected", "expired", "auto")
TIME_TO_DECIDE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
"""Seconds: from a reviewer at the screen to an approval left over a day."""
MAX_NAME_CHARS = 100
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:/@+-]{1,100}")
MAX_CONTEXTS = 256
"""Approval span contexts kept for the tool runs they allowed (taken when the tool runs),
and approvals whose decisions' senders are kept for links (taken at settlement)."""
MAX_LINKS = 8
"""Decisions' senders linked from one approval span (the first ones)."""


def bounded_name(text: str | None) -> str:
    """A tool or reviewer name fit for an attribute: a plain name as it is, else `other`
    (a label must not carry whatever a model or a body put in a name, nor grow a series
    per distinct junk string)."""
    if text and _PLAIN_NAME.fullmatch(text):
        return text
    return "other"


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def _replay_safe_tracer() -> trace.Tracer | None:
    """The tracer for workflow code, only under a replay-safe provider (Temporal's
    `create_tracer_provider`, which `OpenTelemetryPlugin` requires): any other provider
    would export a span again each time a history is replayed."""
    module = sys.modules.get("temporalio.contrib.opentelemetry")
    if module is None:  # never imported: no replay-safe provider can be installed
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, module.ReplaySafeTracerProvider):
        return None
    return provider.get_tracer(TRACER_NAME)


class ApprovalTelemetry:
    """The gate's telemetry (workflow code): requests when opened, a span and outcome
    counts when settled, and the settled approval's span as parent of the tool run it
    allowed. Issues no command, so it needs no patch: spans and `metric_meter` counts are
    not in history, and both skip replay."""

    def __init__(self) -> None:
        self._tracer = _replay_safe_tracer()
        self._since = workflow.now()
        self._reported: set[str] = set()
        self._contexts: dict[str, trace.SpanContext] = {}
        self._senders: dict[str, list[trace.SpanContext]] = {}
        self._instruments: (
            tuple[MetricCounter, MetricCounter, MetricHistogramFloat, MetricCounter] | None
        ) = None

    def _meter(
        self,
    ) -> tuple[MetricCounter, MetricCounter, MetricHistogramFloat, MetricCounter]:
        if self._instruments is None:
            meter = workflow.metric_meter()
            self._instruments = (
                meter.create_counter(REQUESTS, "Approvals asked for", "{approval}"),
                meter.create_counter(
                    OUTCOMES_METRIC, "Approvals settled, by outcome", "{approval}"
                ),
                meter.create_histogram_float(
                    TIME_TO_DECIDE, "From the request to a person's decision", "s"
                ),
                meter.create_counter(EXPIRIES, "Approvals nobody decided in time", "{approval}"),
            )
        return self._instruments

    def received(self, approval_id: str | None) -> None:
        """A decision on `approval_id` arrived, in its handler: the span it came with (the
        sender's, carried in the signal's or update's headers, in the sender's trace) is
        linked from the approval's span, which joins the reviewer's request to the run."""
        if self._tracer is None or not approval_id:
            return
        sender = trace.get_current_span().get_span_context()
        if not sender.is_valid:
            return
        if approval_id not in self._senders and len(self._senders) >= MAX_CONTEXTS:
            self._senders.pop(next(iter(self._senders)))
        senders = self._senders.setdefault(approval_id, [])
        if len(senders) < MAX_LINKS:
            senders.append(sender)

    def requested(self, record: ApprovalRecord) -> None:
        self._meter()[0].add(1, {"tool": bounded_name(record.action_json.tool)})

    def settled(self, record: ApprovalRecord) -> None:
        """Once per approval settled in this run (one carried here settled here counts;
        one settled before the run continued as new was counted by that run)."""
        outcome = record.outcome
        ended = record.reviewed_at or workflow.now()
        if outcome == "pending" or record.id in self._reported or ended < self._since:
            return
        self._reported.add(record.id)
        seconds = max(0.0, (ended - record.created_at).total_seconds())
        tool = bounded_name(record.action_json.tool)
        _, outcomes, waits, expiries = self._meter()
        labels = {"tool": tool, "outcome": outcome}
        outcomes.add(1, labels)
        if outcome == "expired":
            expiries.add(1, {"tool": tool})
        elif outcome != "auto":
            waits.record(seconds, labels)
        if self._tracer is None:
            return
        attributes: dict[str, Any] = {
            "hitl.approval.id": record.id,
            "hitl.tool": tool,
            "hitl.risk": record.risk,
            "hitl.outcome": outcome,
            "hitl.time_to_decide_s": seconds,
            "hitl.quorum": record.quorum,
        }
        if record.reviewer:
            attributes["hitl.reviewer"] = bounded_name(record.reviewer)
        decision_id = next(
            (
                entry.decision_id
                for entry in reversed(record.decisions)
                if entry.outcome == "applied" and entry.decision_id
            ),
            None,
        )
        if decision_id:
            attributes["hitl.decision.id"] = decision_id[:MAX_NAME_CHARS]
        if record.quorum > 1:
            attributes["hitl.votes"] = len(record.votes)
        # Made whole at settlement, from the record's own times: the same span whether the
        # run waited in one worker or was replayed into another on the way, and none
        # exported for a settlement that is being replayed (the provider drops it).
        span = self._tracer.start_span(
            SPAN_NAME,
            attributes=attributes,
            links=[trace.Link(sender) for sender in self._senders.pop(record.id, [])],
            start_time=_ns(record.created_at),
        )
        span.end(end_time=_ns(ended))
        if record.status in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED):
            if len(self._contexts) >= MAX_CONTEXTS:
                self._contexts.pop(next(iter(self._contexts)))
            self._contexts[record.id] = span.get_span_context()

    @contextmanager
    def allowed_by(self, approval_id: str | None) -> Iterator[None]:
        """Schedule the tool run that `approval_id` allowed inside this block, without an
        `await` in it: the activity's headers then carry the approval span as its parent
        (Temporal's propagation), so the tool's spans hang under the approval."""
        context = self._contexts.pop(approval_id, None) if approval_id else None
        if context is None:
            yield
            return
        token = opentelemetry.context.attach(
            trace.set_span_in_context(trace.NonRecordingSpan(context))
        )
        try:
            yield
        finally:
            opentelemetry.context.detach(token)


# --- the processes' side: what the environment turns on ---------------------------------

PROMETHEUS_ENV = "HITL_PROMETHEUS"
METRICS_HOST_ENV = "HITL_METRICS_HOST"
METRICS_PORT_ENV = "HITL_METRICS_PORT"
PENDING_SECONDS_ENV = "HITL_METRICS_PENDING_SECONDS"
DEFAULT_METRICS_PORT = 9464
DEFAULT_PENDING_SECONDS = 30.0


class TelemetryConfigError(ValueError):
    """The telemetry settings can't be used; says which and why."""


def _on(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class TelemetrySettings:
    service: str
    traces: bool
    """Spans over OTLP/HTTP."""
    metrics: bool
    """Metrics over OTLP/HTTP."""
    prometheus: bool
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT
    pending_seconds: float = DEFAULT_PENDING_SECONDS

    @property
    def any_metrics(self) -> bool:
        return self.metrics or self.prometheus


def settings_from_env(
    service: str, environ: Mapping[str, str] | None = None
) -> TelemetrySettings | None:
    """What the environment turns on, or None: nothing (the default)."""
    env = os.environ if environ is None else environ
    if _on(env.get("OTEL_SDK_DISABLED")):
        return None
    common = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    traces = (common or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))) and env.get(
        "OTEL_TRACES_EXPORTER", "otlp"
    ) != "none"
    metrics = (common or bool(env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))) and env.get(
        "OTEL_METRICS_EXPORTER", "otlp"
    ) != "none"
    prometheus = _on(env.get(PROMETHEUS_ENV))
    if not (traces or metrics or prometheus):
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if (traces or metrics) and protocol != "http/protobuf":
        raise TelemetryConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only http/protobuf is supported; "
            "point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)"
        )
    try:
        port = int(env.get(METRICS_PORT_ENV) or DEFAULT_METRICS_PORT)
        pending = float(env.get(PENDING_SECONDS_ENV) or DEFAULT_PENDING_SECONDS)
    except ValueError as error:
        raise TelemetryConfigError(f"{METRICS_PORT_ENV} / {PENDING_SECONDS_ENV}: {error}") from None
    if not 0 <= port < 65536 or pending <= 0:
        raise TelemetryConfigError(
            f"{METRICS_PORT_ENV} is a port (0-65535), {PENDING_SECONDS_ENV} a positive number"
        )
    return TelemetrySettings(
        service=env.get("OTEL_SERVICE_NAME") or service,
        traces=traces,
        metrics=metrics,
        prometheus=prometheus,
        host=env.get(METRICS_HOST_ENV) or "127.0.0.1",
        port=port,
        pending_seconds=pending,
    )


@dataclass
class Telemetry:
    """What `install` set up in this process; `plugins` and `runtime` go to the client."""

    settings: TelemetrySettings
    plugins: list[Any]
    runtime: Runtime | None = None
    tracer_provider: Any = None
    meter_provider: Any = None
    buffer: Any = None
    metrics_address: tuple[str, int] | None = None
    _server: Any = field(default=None, repr=False)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Telemetry]:
        """While the worker runs: drain the runtime's metrics into the SDK, serve
        Prometheus text; on the way out, flush what is left."""
        try:
            if self.settings.prometheus and self.buffer is not None:
                self._serve_prometheus()
            if self.buffer is not None:
                async with _exporter_by_value()(self.buffer, self.meter_provider):
                    yield self
            else:
                yield self
        finally:
            await asyncio.to_thread(self.shutdown)

    def _serve_prometheus(self) -> None:
        from prometheus_client import start_http_server

        server, _ = start_http_server(self.settings.port, addr=self.settings.host)
        self._server = server
        host, port = server.server_address[:2]
        self.metrics_address = (str(host), int(port))

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                provider.shutdown()

    def pending_gauge(self, count: Callable[[], Awaitable[Mapping[str, int]]]) -> PendingGauge:
        """The pending approvals by tool, sampled by `count` every
        HITL_METRICS_PENDING_SECONDS (the API process's view, from visibility)."""
        return PendingGauge(self, count)


def _exporter_by_value() -> type:
    """Temporal's `MetricsExporter`, with its instruments and attribute sets found by value.

    It keeps them by `id()` of the buffer's objects, which live only as long as the
    instrument or the attribute set they stand for: the gate's are made per run and per
    count (`add(1, {"tool": ...})`), so once one was freed its id came back for another,
    and counts landed under another set's labels (tests/test_telemetry.py saw a request
    counted with no tool) while the caches grew by one entry per count."""
    from temporalio.contrib.opentelemetry import MetricsExporter

    class ByValue(MetricsExporter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._by_name: dict[tuple[str, int], Any] = {}

        def _get_or_create_instrument(self, metric: Any) -> Any:
            key = (metric.name, metric.kind)
            found = self._by_name.get(key)
            if found is None:
                self._instruments.clear()  # never the id-keyed entry of a freed metric
                found = self._by_name[key] = super()._get_or_create_instrument(metric)
            return found

        def _get_or_create_attributes(self, attributes: Any) -> Any:
            return dict(attributes)

    return ByValue


class PendingGauge:
    """`hitl.approvals.pending`: the latest count by tool, read every so often; a listing
    that fails keeps the last one (the gauge says what was last known, not zero)."""

    def __init__(
        self, telemetry: Telemetry, count: Callable[[], Awaitable[Mapping[str, int]]]
    ) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        self._count = count
        self._interval = telemetry.settings.pending_seconds
        self.latest: dict[str, int] = {}
        self.task: asyncio.Task[None] | None = None

        def observe(_: CallbackOptions) -> list[Observation]:
            return [Observation(n, {"tool": tool}) for tool, n in sorted(self.latest.items())]

        telemetry.meter_provider.get_meter(TRACER_NAME).create_observable_gauge(
            PENDING, [observe], "{approval}", "Approvals waiting for a decision, by tool"
        )

    def start(self) -> None:
        self.task = asyncio.create_task(self._sample())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                counts = await self._count()
                self.latest = {bounded_name(tool): n for tool, n in counts.items()}
            except Exception:  # the next listing may succeed; the gauge keeps the last
                pass
            took = loop.time() - began
            # Never more than half of a core on listings (they read every pending approval).
            await asyncio.sleep(max(self._interval - took, took))


def install(
    service: str, environ: Mapping[str, str] | None = None, *, worker: bool = True
) -> Telemetry | None:
    """Set this process's tracer and meter providers from the environment (see the module
    docstring), or None when it turns nothing on: then nothing is imported or installed.

    A worker gets a `Runtime` whose metrics (the gate's `workflow.metric_meter()` counts
    and Temporal's own) are drained into the same meter provider (`Telemetry.running`).
    Pass `plugins` and `runtime` to `Client.connect` (`hitl.config.connect` does)."""
    settings = settings_from_env(service, environ)
    if settings is None:
        return None
    try:
        return _install(settings, worker)
    except ImportError as error:
        raise TelemetryConfigError(
            f"telemetry is turned on but its packages are missing ({error.name}): "
            "pip install 'hitl-agents[telemetry]'"
        ) from None


def _install(settings: TelemetrySettings, worker: bool) -> Telemetry:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
    from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime
    from temporalio.runtime import TelemetryConfig as RuntimeTelemetry

    resource = Resource.create({"service.name": settings.service})
    telemetry = Telemetry(settings, plugins=[])
    if settings.traces:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider = create_tracer_provider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        telemetry.tracer_provider = provider
        # Temporal's spans (RunWorkflow, StartActivity, RunActivity, updates) give a run
        # its trace, and the approval spans a parent in it.
        telemetry.plugins.append(OpenTelemetryPlugin(add_temporal_spans=True))
    if settings.any_metrics:
        readers: list[MetricReader] = []
        if settings.metrics:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if settings.prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            readers.append(PrometheusMetricReader())
        meter_provider = MeterProvider(
            metric_readers=readers,
            resource=resource,
            views=[
                View(
                    instrument_name=TIME_TO_DECIDE,
                    aggregation=ExplicitBucketHistogramAggregation(TIME_TO_DECIDE_BUCKETS),
                )
            ],
        )
        metrics.set_meter_provider(meter_provider)
        telemetry.meter_provider = meter_provider
        if worker:
            telemetry.buffer = MetricBuffer(
                100_000, duration_format=MetricBufferDurationFormat.SECONDS
            )
            telemetry.runtime = Runtime(telemetry=RuntimeTelemetry(metrics=telemetry.buffer))
    return telemetry


def pending_by_tool(items: Any) -> dict[str, int]:
    """Pending approvals (`PendingApproval`s) counted by tool."""
    return dict(Counter(str(getattr(item, "tool", "") or "") for item in items))
