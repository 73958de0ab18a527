"""Approval telemetry, received as a collector receives it: a worker process and the review
API process export over OTLP/HTTP to a receiver here; their Prometheus endpoints are
scraped; the run's history is replayed with the same plugins and nothing comes out."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import WorkflowHandle
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from hitl import telemetry
from hitl.models import ApprovalRecord, ApprovalStatus
from hitl.plugin import HitlPlugin
from hitl.reviewers import add_reviewer
from hitl.reviews import Reviews
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import approvals, start_run, turn
from tests.otlp_receiver import OtlpReceiver
from tests.processes import ROOT, WorkerProcess

WORKER, API = "otel-test-worker", "otel-test-api"
CONTENT = "content-never-exported-5f1c"
REASON = "reason-never-exported-9a7e"
DECIDE_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(check: Callable[[], Any], what: str, timeout: float = DECIDE_TIMEOUT) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def next_pending(handle: WorkflowHandle, seen: set[str]) -> ApprovalRecord:
    deadline = asyncio.get_running_loop().time() + DECIDE_TIMEOUT
    while True:
        for record in await approvals(handle):
            if record.status is ApprovalStatus.PENDING and record.id not in seen:
                seen.add(record.id)
                return record
        assert asyncio.get_running_loop().time() < deadline, "no new pending approval"
        await asyncio.sleep(0.05)


async def serve_api(**env: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl.cli", "serve", "--port", "0",
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_"))},
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
            **env,
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    said = ""
    while "the inbox and the API on" not in said:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, f"hitl serve ended: {said}"
        said += line.decode()
    return process, said.rsplit("the inbox and the API on ", 1)[1].strip()


def scraped(text: str, name: str) -> dict[tuple, float]:
    """One Prometheus metric's samples by (outcome, tool) labels."""
    return {
        tuple(sorted((k, v) for k, v in sample.labels.items() if k in ("tool", "outcome"))): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


class Started(SpanProcessor):
    """Counts the approval spans started (ended or not): proof the gate made them."""

    def __init__(self) -> None:
        self.started = 0

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.name == telemetry.SPAN_NAME:
            self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        pass


async def test_a_runs_approvals_reach_a_collector_and_prometheus_and_replay_emits_nothing(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    address = env.client.service_client.config.target_host
    queue = f"tq-otel-{uuid.uuid4().hex[:8]}"
    reviewers = tmp_path / "reviewers.toml"
    token = add_reviewer(reviewers, "alice")
    # write_file of a new plain file scores 35, of a config file 60: the first is approved
    # by the worker's policy, the second needs a person.
    reviewers.write_text(reviewers.read_text() + "\n[policy]\nauto_approve_below = 40\n")
    workspace = make_logs(tmp_path / "ws")
    script = [
        turn(("write_file", {"path": "config/a.yaml", "content": CONTENT})),
        turn(("write_file", {"path": "config/b.yaml", "content": CONTENT})),
        turn(("write_file", {"path": "config/c.yaml", "content": CONTENT})),
        turn(("delete_files", {"paths": OLD_LOGS})),  # risk 42
        turn(("write_file", {"path": "notes.txt", "content": CONTENT})),
        turn(content="done"),
    ]
    prometheus_port = free_port()
    with OtlpReceiver() as otlp:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "HITL_PROMETHEUS": "1",
            "HITL_REVIEWERS": str(reviewers),
        }
        worker = await WorkerProcess(
            address,
            queue,
            OTEL_SERVICE_NAME=WORKER,
            HITL_METRICS_PORT=str(prometheus_port),
            **otel,
        ).start()
        api, url = await serve_api(
            TEMPORAL_ADDRESS=address,
            HITL_TASK_QUEUE=queue,
            OTEL_SERVICE_NAME=API,
            HITL_METRICS_PENDING_SECONDS="0.3",
            **otel,
        )
        try:
            assert "prometheus http://127.0.0.1:" in worker.log()
            handle = await start_run(
                env.client, queue, workspace, script=script,
                tool_approval_timeouts={"delete_files": 2},
            )  # fmt: skip
            seen: set[str] = set()
            auth = {"authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                first = await next_pending(handle, seen)
                # The API's own view of what waits: the pending gauge, over OTLP and text.
                await until(
                    lambda: otlp.latest(telemetry.PENDING, API).get((("tool", "write_file"),)),
                    "the API's pending gauge",
                )
                assert (await http.get("/metrics")).status_code == 401
                # It counts every pending approval of the namespace, other tests' too: the
                # same counts as a listing of them, ours among them.
                expected: dict[tuple[tuple[str, str], ...], float] = {}
                for _ in range(50):
                    listed = telemetry.pending_by_tool(await Reviews(env.client).pending())
                    expected = {(("tool", tool),): count for tool, count in listed.items()}
                    text = (await http.get("/metrics", headers=auth)).text
                    if scraped(text, "hitl_approvals_pending") == expected:
                        break
                    await asyncio.sleep(0.2)
                assert scraped(text, "hitl_approvals_pending") == expected
                assert expected[(("tool", "write_file"),)] >= 1
                answer = await http.post(f"/approvals/{first.id}/approve", json={}, headers=auth)
                assert answer.status_code == 200, answer.text
                second = await next_pending(handle, seen)
                answer = await http.post(
                    f"/approvals/{second.id}/reject", json={"reason": REASON}, headers=auth
                )
                assert answer.status_code == 200, answer.text
                third = await next_pending(handle, seen)
                answer = await http.post(
                    f"/approvals/{third.id}/modify",
                    json={"args": {"path": "config/c.yaml", "content": "edited " + CONTENT}},
                    headers=auth,
                )
                assert answer.status_code == 200, answer.text
            result = await asyncio.wait_for(handle.result(), 60)
            assert [r.state_word for r in result.approvals] == [
                "approved", "rejected", "modified", "expired", "approved",
            ]  # fmt: skip

            # --- spans: one per approval, in the run's trace, parent of the tool it allowed
            spans = await until(
                lambda: (
                    len(otlp.spans_named(telemetry.SPAN_NAME, WORKER)) >= 5
                    and otlp.spans_named("RunWorkflow:AgentWorkflow", WORKER)
                    and otlp.spans_named(telemetry.SPAN_NAME, WORKER)
                ),
                "five approval spans and the run's span",
            )
            assert len(spans) == 5
            [run_span] = otlp.spans_named("RunWorkflow:AgentWorkflow", WORKER)
            by_outcome = {span.attributes["hitl.outcome"]: span for span in spans}
            assert sorted(by_outcome) == ["approved", "auto", "expired", "modified", "rejected"]
            ids = {r.state_word if r.reviewer != "policy" else "auto": r for r in result.approvals}
            for outcome, span in by_outcome.items():
                record = ids[outcome]
                assert span.trace_id == run_span.trace_id, outcome
                assert span.parent_id == run_span.span_id, outcome
                assert span.attributes["hitl.approval.id"] == record.id
                assert span.attributes["hitl.tool"] == record.action_json.tool
                assert span.attributes["hitl.risk"] == record.risk
                assert span.attributes["hitl.quorum"] == 1
                assert span.attributes["hitl.reviewer"] == record.reviewer
                assert record.reviewed_at is not None
                waited = (record.reviewed_at - record.created_at).total_seconds()
                assert span.attributes["hitl.time_to_decide_s"] == pytest.approx(waited)
                assert (span.end_ns - span.start_ns) / 1e9 == pytest.approx(waited, abs=1e-3)
            assert by_outcome["approved"].attributes["hitl.reviewer"] == "alice"
            assert by_outcome["approved"].attributes["hitl.decision.id"] == next(
                e.decision_id for e in ids["approved"].decisions if e.outcome == "applied"
            )
            assert by_outcome["expired"].attributes["hitl.reviewer"] == "system:timeout"
            assert by_outcome["expired"].attributes["hitl.time_to_decide_s"] >= 2
            assert by_outcome["auto"].attributes["hitl.reviewer"] == "policy"

            def children(parent: str) -> list[Any]:
                return [s for s in otlp.spans if s.parent_id == parent]

            for outcome in ("approved", "modified", "auto"):
                [scheduled] = children(by_outcome[outcome].span_id)
                assert scheduled.name == "StartActivity:run_tool", outcome
                [ran] = children(scheduled.span_id)
                assert ran.name == "RunActivity:run_tool" and ran.trace_id == run_span.trace_id
            for outcome in ("rejected", "expired"):
                assert children(by_outcome[outcome].span_id) == [], outcome
            # A decision's trace crosses from the API into the run's update handler, and the
            # approval's span links to that handler's span (the reviewer's request's trace).
            sent = otlp.spans_named("StartWorkflowUpdate:decide", API)
            assert len(sent) >= 2
            handled = [s for s in otlp.spans if s.parent_id in {x.span_id for x in sent}]
            assert {s.service for s in handled} == {WORKER}
            for outcome in ("approved", "rejected", "modified"):
                [(trace_id, span_id)] = by_outcome[outcome].links
                [handler] = [s for s in handled if s.span_id == span_id]
                assert handler.name == "HandleUpdate:decide" and handler.trace_id == trace_id
                assert trace_id != run_span.trace_id, "the request's own trace"
            assert by_outcome["expired"].links == by_outcome["auto"].links == []
            # Nothing a model or a reviewer wrote leaves the processes.
            for span in otlp.spans:
                for value in span.attributes.values():
                    assert CONTENT not in str(value) and REASON not in str(value), span.name

            # --- metrics over OTLP, then the same counters as Prometheus text
            def outcomes() -> dict[tuple, float]:
                points = otlp.latest(telemetry.OUTCOMES_METRIC, WORKER)
                return {key: point.value for key, point in points.items()}

            expected = {
                (("outcome", "approved"), ("tool", "write_file")): 1,
                (("outcome", "rejected"), ("tool", "write_file")): 1,
                (("outcome", "modified"), ("tool", "write_file")): 1,
                (("outcome", "expired"), ("tool", "delete_files")): 1,
                (("outcome", "auto"), ("tool", "write_file")): 1,
            }
            await until(lambda: outcomes() == expected, f"outcomes {expected}, have {outcomes()}")
            requests = otlp.latest(telemetry.REQUESTS, WORKER)
            assert {k: p.value for k, p in requests.items()} == {
                (("tool", "write_file"),): 4,
                (("tool", "delete_files"),): 1,
            }
            expiries = otlp.latest(telemetry.EXPIRIES, WORKER)
            assert {k: p.value for k, p in expiries.items()} == {(("tool", "delete_files"),): 1}
            waits = otlp.latest(telemetry.TIME_TO_DECIDE, WORKER)
            assert set(waits) == {
                (("outcome", "approved"), ("tool", "write_file")),
                (("outcome", "rejected"), ("tool", "write_file")),
                (("outcome", "modified"), ("tool", "write_file")),
            }
            for point in waits.values():
                assert point.kind == "histogram" and point.count == 1
                assert point.bounds == list(telemetry.TIME_TO_DECIDE_BUCKETS)
                assert 0 < point.value < DECIDE_TIMEOUT
            async with httpx.AsyncClient() as http:
                page = await http.get(f"http://127.0.0.1:{prometheus_port}/metrics")
            assert scraped(page.text, "hitl_approval_outcomes_total") == expected
            assert scraped(page.text, "hitl_approval_time_to_decide_seconds_count") == {
                key: 1 for key in waits
            }
        finally:
            api.terminate()
            await asyncio.wait_for(api.wait(), 20)
            await worker.stop()

    # --- replay: the same plugins and a replay-safe provider export nothing, count nothing
    history = await handle.fetch_history()
    exporter, started = InMemorySpanExporter(), Started()
    provider = create_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(started)
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another test set the global provider"
    buffer = MetricBuffer(10_000)
    from workflows import ALL_WORKFLOWS

    replayer = Replayer(
        workflows=ALL_WORKFLOWS,
        data_converter=pydantic_data_converter,
        plugins=[HitlPlugin(), OpenTelemetryPlugin(add_temporal_spans=True)],
        runtime=Runtime(telemetry=TelemetryConfig(metrics=buffer)),
    )
    await replayer.replay_workflow(history)
    assert started.started == 5, "the gate made its spans during the replay too"
    assert [s.name for s in exporter.get_finished_spans()] == []
    names = {update.metric.name for update in buffer.retrieve_updates()}
    assert not {name for name in names if name.startswith("hitl.")}, names


def test_telemetry_is_off_unless_the_environment_turns_it_on() -> None:
    assert telemetry.settings_from_env("hitl-worker", {}) is None
    assert telemetry.install("hitl-worker", {}) is None
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    assert telemetry.settings_from_env("hitl-worker", off) is None
    on = telemetry.settings_from_env(
        "hitl-worker", {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318"}
    )
    assert on is not None and (on.traces, on.metrics, on.prometheus) == (False, True, False)
    assert on.service == "hitl-worker"
    scrape = telemetry.settings_from_env(
        "hitl-api", {"HITL_PROMETHEUS": "1", "OTEL_SERVICE_NAME": "reviews"}
    )
    assert scrape is not None and scrape.service == "reviews"
    assert (scrape.traces, scrape.metrics, scrape.prometheus) == (False, False, True)
    with pytest.raises(telemetry.TelemetryConfigError, match="only http/protobuf"):
        telemetry.settings_from_env(
            "hitl-worker",
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        )
    with pytest.raises(telemetry.TelemetryConfigError, match="HITL_METRICS_PORT"):
        telemetry.settings_from_env("w", {"HITL_PROMETHEUS": "1", "HITL_METRICS_PORT": "x"})


def test_a_worker_without_telemetry_imports_no_sdk() -> None:
    """Off costs nothing: the worker's entry point imports no OpenTelemetry SDK or exporter
    (the gate uses the API only, a no-op without a provider)."""
    import subprocess

    code = (
        "import sys, worker, hitl.runworker, hitl.telemetry as t\n"
        "assert t.install('hitl-worker', {}) is None\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk',"
        " 'opentelemetry.exporter', 'prometheus_client'))]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_names_in_attributes_are_plain_or_other() -> None:
    assert telemetry.bounded_name("write_file") == "write_file"
    assert telemetry.bounded_name("alice@example.com") == "alice@example.com"
    for junk in ("x" * 101, "rm -rf /", "tool\nname", "", None, "<script>"):
        assert telemetry.bounded_name(junk) == "other"
