"""A small OTLP/HTTP receiver for tests: what a collector gets, decoded with opentelemetry-proto.

It accepts POST /v1/traces and /v1/metrics (protobuf, gzip or not) on a loopback port and
keeps every span and every metric data point, flattened, with the service that sent it.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items if isinstance(item, KeyValue)}


@dataclass
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]
    start_ns: int
    end_ns: int


@dataclass
class Point:
    service: str
    metric: str
    kind: str
    attributes: dict[str, Any]
    value: float
    """The sum or gauge value; for a histogram, the sum of what it recorded."""
    count: int = 0
    bounds: list[float] = field(default_factory=list)
    buckets: list[int] = field(default_factory=list)


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.points: list[Point] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver._traces(ExportTraceServiceRequest.FromString(body))
                    answer = ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver._metrics(ExportMetricsServiceRequest.FromString(body))
                    answer = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _traces(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    found.append(
                        Span(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            links=[(x.trace_id.hex(), x.span_id.hex()) for x in span.links],
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(found)

    def _metrics(self, request: ExportMetricsServiceRequest) -> None:
        found = []
        for resource_metrics in request.resource_metrics:
            service = _attributes(resource_metrics.resource.attributes).get("service.name", "")
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    data = getattr(metric, kind)
                    for point in data.data_points:
                        attributes = _attributes(point.attributes)
                        if kind == "histogram":
                            found.append(
                                Point(
                                    service,
                                    metric.name,
                                    kind,
                                    attributes,
                                    point.sum,
                                    point.count,
                                    list(point.explicit_bounds),
                                    list(point.bucket_counts),
                                )
                            )
                        else:
                            value = point.as_double if point.HasField("as_double") else point.as_int
                            found.append(Point(service, metric.name, kind, attributes, value))
        with self._lock:
            self.requests += 1
            self.points.extend(found)

    def spans_named(self, name: str, service: str | None = None) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name and service in (None, s.service)]

    def latest(self, metric: str, service: str | None = None) -> dict[tuple, Point]:
        """The latest point of each attribute set of a metric (cumulative: the total)."""
        with self._lock:
            points = [p for p in self.points if p.metric == metric]
        return {
            tuple(sorted((k, v) for k, v in p.attributes.items() if k in ("tool", "outcome"))): p
            for p in points
            if service in (None, p.service)
        }
