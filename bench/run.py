"""`make bench`: the project against a baseline, on its own dev server, scripted model only.

1. decision to resume: signal sent -> approved action's activity started, one at a time
2. bulk: N paused runs approved at once through `hitl approve --all`'s library call
3. waiting at scale: resident memory of worker and server, and `hitl pending` latency
4. orchestration overhead per agent step: the workflow against the same loop in-process
5. growth: history per step at 10, 100 and 500 steps
6. the review API (`hitl serve`): decision to the approved action's start beside a signed
   signal, the first page of pending over the paused runs, /events delivery delay
9. the inbox in Chromium (`--parts inbox`, not run by default): first rows shown, and a
   tool filter typed until its rows show, over the paused runs (after `scale`, or alone)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from activities.scripted import scripted_turn
from hitl import contract
from hitl.activities.tools import ToolActivities
from hitl.config import connect, load_settings
from hitl.devserver import DevServer, free_port, temporal_version
from hitl.entry import exit_now
from hitl.models import (
    ApproveDecision,
    ChatMessage,
    LlmRequest,
    ModelSettings,
    RunInput,
    RunResult,
    ScriptedTurn,
    ToolAction,
    ToolCall,
    ToolRequest,
)
from hitl.reviewers import add_reviewer, decode_key, new_key
from hitl.reviews import Reviews
from hitl.starting import signed_input
from hitl.tools import load_tools
from workflows.agent import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parent.parent


CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium, as the inbox tests use (never a downloaded one)."""


def _turn(tool: str, args: dict[str, Any]) -> ScriptedTurn:
    return ScriptedTurn(
        content="bench", tool_calls=[ToolCall(id="c1", name=tool, arguments=json.dumps(args))]
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """Reads the activity-start times a worker process appends to its probe file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self.offset = 0

    def poll(self) -> dict[str, float]:
        with open(self.path) as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind("\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            key, stamp = line.split()
            self.seen[key] = float(stamp)
        return self.seen

    async def wait(self, key: str, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while key not in self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError(f"activity for {key} never started")
            await asyncio.sleep(0.0005)
        return self.seen[key]

    async def wait_count(self, keys: set[str], timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while not keys <= self.poll().keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(keys - self.seen.keys())} activities never started")
            await asyncio.sleep(0.01)
        return max(self.seen[key] for key in keys)


class WorkerProcess:
    def __init__(
        self,
        kind: str,
        address: str,
        task_queue: str,
        probe: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        probe.touch()
        self.probe = Probe(probe)
        ready = probe.with_suffix(".ready")
        # Output goes to a file: an undrained pipe would block the worker once it fills.
        with open(probe.with_suffix(".log"), "w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.worker",
                    "--kind",
                    kind,
                    "--task-queue",
                    task_queue,
                    "--probe",
                    str(probe),
                    "--ready",
                    str(ready),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "TEMPORAL_ADDRESS": address,
                    "HITL_LOG_LEVEL": "ERROR",
                    **(env or {}),
                },
            )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} worker did not start; see {log.name}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 100) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        project: Client,
        baseline: Client,
        workspace: Path,
        workers: dict[str, WorkerProcess],
        queues: dict[str, str],
        server: DevServer,
    ) -> None:
        self.args = args
        self.project = project
        self.baseline = baseline
        self.workspace = workspace
        self.workers = workers
        self.queues = queues
        self.server = server
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.values: dict[str, tuple[float, float]] = {}
        self.notes: list[str] = []

    def row(self, name: str, ours: float, base: float, unit: str, better: str = "lower") -> None:
        self.values[name] = (ours, base)
        ratio = (
            (base / ours if better == "lower" else ours / base) if ours and base else float("nan")
        )
        self.rows.append(
            (name, f"{ours:,.1f} {unit}", f"{base:,.1f} {unit}", f"{ratio:.2f}x", better)
        )
        print(
            f"  {name:44} {ours:>10,.1f} {unit:6} baseline {base:>10,.1f} {unit:6} "
            f"({ratio:.2f}x, {better} is better)",
            flush=True,
        )

    async def frameworks(self) -> None:
        """The gate behind the agent frameworks (hitl.integrations): decision to the approved
        tool's start through the gate, against the framework's own approval path resumed by
        a plain signal, each on a worker in this process."""
        from bench import openai_agents, pydantic_ai

        print("frameworks: decision to tool start, gate vs the framework's own path", flush=True)
        oai = await openai_agents.measure(self.project, runs=self.args.frameworks)
        self.row(
            "OpenAI Agents SDK: decision to tool start p50",
            oai["gated_decision_to_tool_start_p50_ms"],
            oai["plain_signal_to_tool_start_p50_ms"],
            "ms",
        )
        pai = await pydantic_ai.measure(self.project, count=self.args.frameworks)
        self.row(
            "Pydantic AI: decision to tool start p50",
            pai["gate_p50_ms"],
            pai["plain_signal_p50_ms"],
            "ms",
        )
        self.notes.append(
            "Frameworks: the baseline is each framework's own approval path resumed by a "
            "plain signal (no preview, no rules, no audit). Pydantic AI's gated path also "
            "asks the run, from the tool's activity, whether the approval it carries was "
            f"given for these arguments: without that query its p50 is "
            f"{pai['gate_without_activity_check_p50_ms']:.1f} ms."
        )

    async def backtest(self) -> None:
        """Auto-approval rules replayed over recorded approvals (`hitl policy test --from`):
        synthetic records as a JSON Lines export, predicate rules and the same as Cedar."""
        from bench import backtest

        count = self.args.backtest
        print(f"backtest: a rule set replayed over {count:,} recorded approvals", flush=True)
        found = await asyncio.to_thread(backtest.measure, count, self.workspace.parent)
        assert found["predicates_dangerous"] == found["cedar_dangerous"], found
        self.fact(
            f"backtest over {count:,} approvals, predicate rules", found["predicates_ms"], "ms"
        )
        self.fact(f"backtest over {count:,} approvals, Cedar policies", found["cedar_ms"], "ms")
        self.notes.append(
            f"Backtest: {count:,} synthetic approvals ({found['export_mb']:.1f} MB of JSON "
            "Lines) read and judged by four rules, then by the same decisions as Cedar "
            f"policies (both remove {found['predicates_removed']:,} prompts and find "
            f"{found['predicates_dangerous']:,} dangerous cases); judging alone "
            f"{found['predicates_eval_ms']:.0f} ms and {found['cedar_eval_ms']:.0f} ms."
        )

    def _cpu(self) -> dict[str, float]:
        assert self.server.process is not None
        return {
            "server": cpu_seconds(self.server.process.pid),
            "project worker": cpu_seconds(self.workers["project"].process.pid),
            "baseline worker": cpu_seconds(self.workers["baseline"].process.pid),
            "bench client": time.process_time(),
        }

    def _report_cpu(self, label: str, before: dict[str, float]) -> None:
        after = self._cpu()
        spent = ", ".join(f"{name} {after[name] - before[name]:.1f}" for name in after)
        self.note(f"{label}: CPU seconds: {spent}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  ({text})", flush=True)

    # --- paused runs ----------------------------------------------------------------------

    async def pause_project_runs(
        self,
        count: int,
        label: str,
        queue: str | None = None,
        signing: tuple[str, bytes] | None = None,
    ) -> list[tuple[str, str]]:
        """`count` agent runs paused on one approval each; returns (workflow id, approval id).

        `signing`: the starts are signed (as the review API signs them), for a worker that
        takes only signed starts."""
        prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}"
        (self.workspace / label).mkdir(exist_ok=True)

        def start(i: int) -> Callable[[], Awaitable[Any]]:
            run = RunInput(
                task=f"bench {label} {i}",
                workspace=str(self.workspace),
                model=ModelSettings(
                    script=[
                        _turn("write_file", {"path": f"{label}/{i}.txt", "content": f"run {i}\n"})
                    ]
                ),
            )
            if signing is not None:
                run = signed_input(run, f"{prefix}-{i}", "bench-starter", signing)
            return lambda: self.project.start_workflow(
                contract.WORKFLOW_NAME,
                run,
                id=f"{prefix}-{i}",
                task_queue=queue or self.queues["project"],
            )

        await gather_limited([start(i) for i in range(count)])
        return await self._wait_paused(prefix, count)

    async def _wait_paused(self, prefix: str, count: int) -> list[tuple[str, str]]:
        # Counting is cheap for the server; the full listing is read once at the end.
        query = (
            f"WorkflowId STARTS_WITH '{prefix}' AND ExecutionStatus = 'Running' "
            f"AND {contract.PENDING_KEY.name} > 0"
        )
        deadline = time.monotonic() + 3600
        while (await self.project.count_workflows(query)).count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} runs paused")
            await asyncio.sleep(1)
        pending = [
            p for p in await Reviews(self.project).pending() if p.session_id.startswith(prefix)
        ]
        return [(p.session_id, p.id) for p in pending]

    async def pause_baseline_runs(self, count: int, label: str) -> list[WorkflowHandle]:
        prefix = f"base-{label}-{uuid.uuid4().hex[:6]}"
        handles = await gather_limited(
            [
                (
                    lambda i=i: self.baseline.start_workflow(
                        "BaselineApproval",
                        f"{prefix}-{i}",
                        id=f"{prefix}-{i}",
                        task_queue=self.queues["baseline"],
                    )
                )
                for i in range(count)
            ]
        )

        # Each has run its first workflow task (waiting) once it has 4+ history events.
        async def settled(handle: WorkflowHandle) -> None:
            while True:
                events = [e async for e in handle.fetch_history_events()]
                if len(events) >= 4:
                    return
                await asyncio.sleep(0.05)

        # Tasks are served in order: once a sample through to the last run has settled,
        # the rest have too.
        sample = handles[:: max(1, len(handles) // 20)] + handles[-1:]
        await gather_limited([(lambda h=h: settled(h)) for h in sample], 50)
        return handles

    # --- 1. decision to resume -------------------------------------------------------------

    async def latency(self) -> None:
        count = self.args.latency
        print(f"\n1. decision to resume, {count} approvals one at a time", flush=True)
        pairs = await self.pause_project_runs(count, "latency")
        probe = self.workers["project"].probe
        ours = []
        # One at a time: each run finishes before the next decision, so no run's tail
        # (the agent's next turn) overlaps the next measurement.
        for workflow_id, approval_id in pairs:
            handle = self.project.get_workflow_handle(workflow_id)
            payload = {"approval_id": approval_id, "reviewer": "bench"}
            sent = time.time()
            await handle.signal(contract.SIGNAL_APPROVE, payload)
            ours.append((await probe.wait(approval_id) - sent) * 1000)
            await handle.result()
        await self._decide_update_or_signal(max(2, count // 2))
        handles = await self.pause_baseline_runs(count, "latency")
        base_probe = self.workers["baseline"].probe
        base = []
        for handle in handles:
            sent = time.time()
            await handle.signal("approve")
            base.append((await base_probe.wait(handle.id) - sent) * 1000)
            await handle.result()
        for q in (50, 95, 99):
            self.row(f"decision to resume p{q}", percentile(ours, q), percentile(base, q), "ms")
        self.row("decision to resume max", max(ours), max(base), "ms")

    async def _decide_update_or_signal(self, count: int) -> None:
        """The reviewer library's two ways to decide, each on paused runs of its own."""
        reviews = Reviews(self.project)
        probe = self.workers["project"].probe
        timing: dict[str, tuple[list[float], list[float]]] = {}
        for via in ("update", "signal"):
            pairs = await self.pause_project_runs(count, f"via-{via}")
            confirmed, started = [], []
            for workflow_id, approval_id in pairs:
                sent = time.time()
                outcome = await reviews.decide(
                    ApproveDecision(approval_id=approval_id, reviewer="bench"),
                    workflow_id=workflow_id,
                    via=via,
                )
                confirmed.append((time.time() - sent) * 1000)
                assert outcome.applied, outcome
                started.append((await probe.wait(approval_id) - sent) * 1000)
                await self.project.get_workflow_handle(workflow_id).result()
            timing[via] = (confirmed, started)
        for q in (50, 99):
            self.row(
                f"decide, outcome confirmed p{q}",
                percentile(timing["update"][0], q),
                percentile(timing["signal"][0], q),
                "ms",
            )
        for q in (50, 99):
            self.row(
                f"decide, to action start p{q}",
                percentile(timing["update"][1], q),
                percentile(timing["signal"][1], q),
                "ms",
            )
        self.note(
            f"decide ({count} runs each): `Reviews.decide(via='update')`, the default, in the "
            "project column; `via='signal'` (the signal, then the run's decision log queried "
            "until it shows the decision) in the baseline column"
        )

    # --- 9. telemetry -------------------------------------------------------------------------

    async def telemetry(self) -> None:
        """Approval telemetry's cost: the same approved runs, in alternating batches, on a
        worker with it on (spans and metrics over OTLP/HTTP to a receiver in this process,
        Prometheus served) and on the project worker, with it off."""
        from tests.otlp_receiver import OtlpReceiver

        count, batch = self.args.telemetry, 10
        print(f"\n9. telemetry: {count} approved calls with it on and off", flush=True)
        queue = "bench-telemetry"
        with OtlpReceiver() as otlp:
            on = WorkerProcess(
                "project",
                self.server.address,
                queue,
                self.workers["project"].probe.path.with_name("telemetry.probe"),
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
                    "OTEL_SERVICE_NAME": "hitl-bench-worker",
                    # Set in the bench's environment to measure one signal alone
                    # (OTEL_TRACES_EXPORTER=none, or OTEL_METRICS_EXPORTER=none with
                    # HITL_PROMETHEUS=0).
                    "HITL_PROMETHEUS": os.environ.get("HITL_PROMETHEUS", "1"),
                    "HITL_METRICS_PORT": str(free_port()),
                },
            )
            sides = {"off": (self.workers["project"], None), "on": (on, queue)}
            cpu = {side: 0.0 for side in sides}
            resume: dict[str, list[float]] = {side: [] for side in sides}
            whole: dict[str, list[float]] = {side: [] for side in sides}
            idle = {}
            try:
                for side, (worker, _) in sides.items():
                    before = cpu_seconds(worker.process.pid)
                    await asyncio.sleep(10)
                    idle[side] = (cpu_seconds(worker.process.pid) - before) / 10 * 1000
                for n in range(0, count, batch):
                    for side, (worker, on_queue) in sides.items():
                        before = cpu_seconds(worker.process.pid)
                        size = min(batch, count - n)
                        pairs = await self.pause_project_runs(size, f"otel-{side}", on_queue)
                        for workflow_id, approval_id in pairs:
                            handle = self.project.get_workflow_handle(workflow_id)
                            sent = time.time()
                            await handle.signal(
                                contract.SIGNAL_APPROVE,
                                {"approval_id": approval_id, "reviewer": "bench"},
                            )
                            began = await worker.probe.wait(approval_id)
                            resume[side].append((began - sent) * 1000)
                            await handle.result()
                            whole[side].append((time.time() - sent) * 1000)
                        cpu[side] += cpu_seconds(worker.process.pid) - before
                await asyncio.sleep(2)  # the last batch's spans out (batch delay 5 s max)
            finally:
                on.stop()
            spans = len(otlp.spans_named("hitl.approval"))
        per_call = {side: cpu[side] / count * 1000 for side in sides}
        self.row("telemetry: worker CPU per approved run", per_call["on"], per_call["off"], "ms")
        for q in (50, 99):
            self.row(
                f"telemetry: decision to resume p{q}",
                percentile(resume["on"], q),
                percentile(resume["off"], q),
                "ms",
            )
        self.row(
            "telemetry: decision to run result p50",
            percentile(whole["on"], 50),
            percentile(whole["off"], 50),
            "ms",
        )
        self.row("telemetry: idle worker CPU per second", idle["on"], idle["off"], "ms")
        self.note(
            f"telemetry ({count} approved runs, batches of {batch} alternating): the project "
            "column is a worker with telemetry on (OTLP/HTTP spans and metrics to a receiver in "
            "the bench process, Prometheus served), the baseline column the same worker code "
            f"with it off; CPU per run covers start, pause, decision, tool and end; the "
            f"receiver got {spans} approval spans"
        )

    # --- 2. bulk ----------------------------------------------------------------------------

    async def bulk(self) -> None:
        count = self.args.bulk
        print(f"\n2. bulk: {count} paused runs approved at once", flush=True)
        pairs = await self.pause_project_runs(count, "bulk")
        wanted = {approval_id for _, approval_id in pairs}
        items = [p for p in await Reviews(self.project).pending() if p.id in wanted]
        probe = self.workers["project"].probe
        cpu = self._cpu()
        began = time.time()
        outcomes = await Reviews(self.project).decide_many(
            items, lambda item: ApproveDecision(approval_id=item.id, reviewer="bench-bulk")
        )
        applied = sum(1 for outcome in outcomes if outcome.applied)
        started = await probe.wait_count(wanted)
        await gather_limited(
            [
                (lambda wf=wf: self.project.get_workflow_handle(wf, result_type=RunResult).result())
                for wf, _ in pairs
            ]
        )
        ours_done = time.time() - began
        self._report_cpu("project bulk", cpu)
        assert applied == count, f"only {applied} of {count} decisions applied"

        handles = await self.pause_baseline_runs(count, "bulk")
        base_probe = self.workers["baseline"].probe
        cpu = self._cpu()
        began_base = time.time()
        await gather_limited([(lambda h=h: h.signal("approve")) for h in handles], 64)
        base_started = await base_probe.wait_count({h.id for h in handles})
        await gather_limited([(lambda h=h: h.result()) for h in handles])
        base_done = time.time() - began_base
        self._report_cpu("baseline bulk", cpu)
        self.row(
            "bulk: all approved actions started", started - began, base_started - began_base, "s"
        )
        self.row("bulk: all runs completed", ours_done, base_done, "s")
        self.row("bulk: decisions per second", count / ours_done, count / base_done, "/s", "higher")

    # --- 3. waiting at scale -----------------------------------------------------------------

    async def scale(self) -> None:
        count = self.args.scale
        print(f"\n3. waiting at scale: {count} paused runs", flush=True)
        began = time.time()
        await self.pause_project_runs(count, "scale")
        self.note(f"{count} project runs paused in {time.time() - began:.0f} s")
        await self.pause_baseline_runs(count, "scale")
        await asyncio.sleep(2)
        ours_rss = rss_mb(self.workers["project"].process.pid)
        base_rss = rss_mb(self.workers["baseline"].process.pid)
        server_rss = rss_mb(self.server.process.pid) if self.server.process else float("nan")
        listings = []
        for _ in range(3):
            t0 = time.perf_counter()
            pending = await Reviews(self.project).pending()
            listings.append(time.perf_counter() - t0)
        assert len(pending) >= count
        base_listings = []
        for _ in range(3):
            t0 = time.perf_counter()
            ids = [
                wf.id
                async for wf in self.baseline.list_workflows(
                    "WorkflowType = 'BaselineApproval' AND ExecutionStatus = 'Running'"
                )
            ]
            base_listings.append(time.perf_counter() - t0)
        assert len(ids) >= count
        self.row(f"worker resident memory, {count} paused", ours_rss, base_rss, "MB")
        self.row(
            f"`hitl pending` over {len(pending)} approvals",
            statistics.median(listings),
            statistics.median(base_listings),
            "s",
        )
        self.rows.append(
            (
                f"server resident memory, {2 * count} paused",
                f"{server_rss:,.0f} MB",
                "(shared)",
                "",
                "lower",
            )
        )
        self.note(f"server resident memory with {2 * count} paused runs: {server_rss:,.0f} MB")

    # --- 4. per-step overhead ----------------------------------------------------------------

    async def steps(self) -> None:
        steps, repeats = self.args.steps, self.args.repeats
        print(f"\n4. per-step overhead: {steps} steps x {repeats} runs", flush=True)
        (self.workspace / "steps").mkdir(exist_ok=True)
        (self.workspace / "steps" / "a.log").write_text("x")
        script = [_turn("find_files", {"pattern": "*.log"}) for _ in range(steps - 1)]
        ours = []
        for _ in range(repeats):
            run = RunInput(
                task="bench steps",
                workspace=str(self.workspace / "steps"),
                model=ModelSettings(script=script),
                max_steps=steps + 1,
            )
            t0 = time.perf_counter()
            await self.project.execute_workflow(
                contract.WORKFLOW_NAME,
                run,
                id=f"bench-steps-{uuid.uuid4().hex[:8]}",
                task_queue=self.queues["project"],
                result_type=RunResult,
            )
            ours.append((time.perf_counter() - t0) / steps)
        local = [await self._in_process(script, steps) for _ in range(repeats)]
        overhead = [(o - w) * 1000 for o, w in zip(ours, local, strict=True)]
        base = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await self.baseline.execute_workflow(
                "BaselineLoop",
                steps,
                id=f"base-steps-{uuid.uuid4().hex[:8]}",
                task_queue=self.queues["baseline"],
            )
            base.append((time.perf_counter() - t0) / steps * 1000)
        self.row(
            "overhead per agent step p50",
            statistics.median(overhead),
            statistics.median(base),
            "ms",
        )
        self.note(f"the same step in-process: {statistics.median(local) * 1000:.2f} ms")

    # --- 5. growth ---------------------------------------------------------------------------

    def fact(self, name: str, value: float, unit: str) -> None:
        """A measure with no baseline to compare against."""
        self.values[name] = (value, float("nan"))
        self.rows.append((name, f"{value:,.1f} {unit}", "—", "", "lower"))
        print(f"  {name:44} {value:>10,.1f} {unit}", flush=True)

    async def growth(self) -> None:
        """History per agent step at 10, 100 and 500 steps: it must grow linearly."""
        print(f"\n5. growth: runs of {', '.join(map(str, self.args.growth))} steps", flush=True)
        folder = self.workspace / "growth"
        folder.mkdir(exist_ok=True)
        (folder / "big.txt").write_text("0123456789abcdef" * 512)  # 8 KiB per read
        per_step: dict[int, float] = {}
        largest = 0
        for steps in self.args.growth:
            script = [_turn("read_file", {"path": "big.txt"}) for _ in range(steps - 1)]
            workflow_id = f"bench-growth-{steps}-{uuid.uuid4().hex[:6]}"
            run = RunInput(
                task="bench growth",
                workspace=str(folder),
                model=ModelSettings(script=script),
                max_steps=steps,
            )
            t0 = time.perf_counter()
            result: RunResult = await self.project.execute_workflow(
                contract.WORKFLOW_NAME,
                run,
                id=workflow_id,
                task_queue=self.queues["project"],
                result_type=RunResult,
            )
            elapsed = time.perf_counter() - t0
            events = size = 0
            for run_id in [*result.previous_runs, result.evidence["run_id"]]:
                history = await self.project.get_workflow_handle(
                    workflow_id, run_id=run_id
                ).fetch_history()
                events += len(history.events)
                size += sum(event.ByteSize() for event in history.events)
                largest = max(largest, *(event.ByteSize() for event in history.events))
            per_step[steps] = size / steps
            self.fact(f"history bytes per step, {steps} steps", size / steps / 1024, "KiB")
            self.fact(f"history events per step, {steps} steps", events / steps, "")
            self.fact(f"time per step, {steps} steps", elapsed / steps * 1000, "ms")
            self.note(
                f"{steps} steps: {len(result.previous_runs) + 1} run(s) in the chain "
                f"(continue-as-new), {events:,} events, {size / 1024 / 1024:.1f} MiB of history"
            )
        self.fact("largest event (payload) in any history", largest / 1024, "KiB")
        longest, shortest = max(per_step), sorted(per_step)[len(per_step) // 2]
        self.fact(
            f"history per step, {longest} vs {shortest} steps",
            per_step[longest] / per_step[shortest],
            "x",
        )

    async def _in_process(self, script: list[ScriptedTurn], steps: int) -> float:
        """The same loop without Temporal: model turn, then each tool call, per step."""
        messages = [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content="bench steps"),
        ]
        registry = load_tools()
        tools = ToolActivities(registry)
        schemas = [descriptor.chat_schema() for descriptor in registry.descriptors()]
        t0 = time.perf_counter()
        for _ in range(steps):
            turn = scripted_turn(
                LlmRequest(model=ModelSettings(script=script), messages=messages, tools=schemas)
            )
            messages.append(
                ChatMessage(role="assistant", content=turn.content, tool_calls=turn.tool_calls)
            )
            for call in turn.tool_calls:
                result = await tools.run_tool(
                    ToolRequest(
                        action=ToolAction(tool=call.name, args=json.loads(call.arguments)),
                        workspace=str(self.workspace / "steps"),
                    )
                )
                messages.append(
                    ChatMessage(role="tool", tool_call_id=call.id, content=result.model_dump_json())
                )
        return (time.perf_counter() - t0) / steps

    # --- 6. the review API ---------------------------------------------------------------------

    async def api(self) -> None:
        """`hitl serve` as a user runs it, before a worker that takes only signed decisions."""
        count = self.args.api
        print(f"\n6. review API: {count} decisions through it and beside it", flush=True)
        async with self._served(worker=True) as (http, worker, key):
            assert worker is not None
            await self._api_decisions(http, worker, key, count)

    async def api_scale(self) -> None:
        """The API's first page, and /events, over every paused run (after `scale`)."""
        print("\n7. review API over the paused runs", flush=True)
        async with self._served(worker=False) as (http, _, _):
            await self._api_listing(http)

    @contextlib.asynccontextmanager
    async def _served(
        self, worker: bool
    ) -> AsyncIterator[tuple[httpx.AsyncClient, WorkerProcess | None, str]]:
        root = self.workspace.parent / f"api-{uuid.uuid4().hex[:6]}"
        root.mkdir()
        reviewers = root / "reviewers.toml"
        token = add_reviewer(reviewers, "bench")
        key = new_key()
        signed = {"HITL_REVIEWERS": str(reviewers), "HITL_DECISION_KEYS": f"api:{key}"}
        process = (
            WorkerProcess("project", self.server.address, "bench-api", root / "api.probe", signed)
            if worker
            else None
        )
        served = ApiProcess(self.server.address, reviewers, key, root / "serve.log")
        try:
            async with httpx.AsyncClient(
                base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                yield http, process, key
        finally:
            served.stop()
            if process is not None:
                process.stop()

    async def _api_decisions(
        self, http: httpx.AsyncClient, worker: WorkerProcess, key: str, count: int
    ) -> None:
        events = EventsReader(http)
        await events.start()
        pairs = await self.pause_project_runs(
            count, "api", queue="bench-api", signing=("api", decode_key(key))
        )
        through_api, delivered = [], []
        for workflow_id, approval_id in pairs:
            sent = time.time()
            answer = await http.post(f"/approvals/{approval_id}/approve", json={})
            assert answer.status_code == 200, answer.text
            through_api.append((await worker.probe.wait(approval_id) - sent) * 1000)
            delivered.append((await events.decided(approval_id) - sent) * 1000)
            await self.project.get_workflow_handle(workflow_id).result()
        # The same decision signed as the API signs it, sent straight to the run.
        signer = Reviews(self.project, signer=("api", decode_key(key)))
        pairs = await self.pause_project_runs(
            count, "api-signal", queue="bench-api", signing=("api", decode_key(key))
        )
        direct, polled = [], []
        for workflow_id, approval_id in pairs:
            handle = self.project.get_workflow_handle(workflow_id)
            record = await signer.get(approval_id)
            payload = signer.payload(
                ApproveDecision(
                    approval_id=approval_id, reviewer="bench", action_digest=record.action_digest
                )
            )
            sent = time.time()
            await handle.signal(contract.SIGNAL_APPROVE, payload)
            direct.append((await worker.probe.wait(approval_id) - sent) * 1000)
            polled.append((await events.decided(approval_id) - sent) * 1000)
            await handle.result()
        await events.stop()
        for q in (50, 99):
            self.row(
                f"API decision to action start p{q}",
                percentile(through_api, q),
                percentile(direct, q),
                "ms",
            )
        self.note(
            "API decision to action start: POST /approvals/ID/approve (find the record, check "
            "the reviewer, sign, the `decide` update) until the action's activity starts; "
            "baseline column: the same decision, signed, sent as a signal (no API)"
        )
        self.fact("/events delay, decided through the API, p50", percentile(delivered, 50), "ms")
        self.fact("/events delay, decided through the API, p99", percentile(delivered, 99), "ms")
        self.fact("/events delay, decided by a signal, p50", percentile(polled, 50), "ms")
        self.fact("/events delay, decided by a signal, p99", percentile(polled, 99), "ms")

    async def _api_listing(self, http: httpx.AsyncClient) -> None:
        paused = await self._paused_up_to(self.args.scale)
        firsts, seconds = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            answer = await http.get("/approvals", params={"limit": 50})
            firsts.append((time.perf_counter() - t0) * 1000)
            page = answer.json()
            assert len(page["items"]) == 50 and page["next_page_token"], answer.text
            t0 = time.perf_counter()
            await http.get(
                "/approvals", params={"limit": 50, "page_token": page["next_page_token"]}
            )
            seconds.append((time.perf_counter() - t0) * 1000)
        self.fact(f"API first page of 50, {paused:,} pending, p50", percentile(firsts, 50), "ms")
        self.fact(f"API first page of 50, {paused:,} pending, p99", percentile(firsts, 99), "ms")
        self.fact(f"API second page of 50, {paused:,} pending, p50", percentile(seconds, 50), "ms")
        # The poller lists every pending approval once, then only the runs that changed
        # (HitlUpdatedAt): a decision made elsewhere should not wait on the others.
        events = EventsReader(http)
        began = time.perf_counter()
        await events.start()
        self.note(f"/events ready (first listing) after {time.perf_counter() - began:.1f} s")
        pairs = await self.pause_project_runs(10, "api-events")
        polled = []
        for workflow_id, approval_id in pairs:
            sent = time.time()
            await self.project.get_workflow_handle(workflow_id).signal(
                contract.SIGNAL_APPROVE, {"approval_id": approval_id, "reviewer": "bench"}
            )
            polled.append((await events.decided(approval_id) - sent) * 1000)
        await events.stop()
        for q in (50, 99):
            self.fact(
                f"/events delay, decided by a signal, {paused:,} pending, p{q}",
                percentile(polled, q),
                "ms",
            )

    # --- 9. the inbox in a browser -----------------------------------------------------------

    async def inbox(self) -> None:
        """The web inbox in Chromium over every paused run (after `scale`, or alone: it
        pauses runs up to --scale itself): page load until the first rows show, and a tool
        filter typed until its rows show."""
        print("\n9. the inbox in Chromium over the paused runs", flush=True)
        async with self._served(worker=False) as (http, _, _):
            paused = await self._paused_up_to(self.args.scale)
            await self._inbox_renders(http, paused)

    async def _paused_up_to(self, count: int) -> int:
        """How many runs are paused, after pausing more to reach `count`."""
        paused = (
            await self.project.count_workflows(
                f"ExecutionStatus = 'Running' AND {contract.PENDING_KEY.name} > 0"
            )
        ).count
        if paused < count:
            print(f"  pausing {count - paused} more runs", flush=True)
            await self.pause_project_runs(count - paused, "more")
            paused = count
        return paused

    async def _inbox_renders(self, http: httpx.AsyncClient, paused: int) -> None:
        from playwright.async_api import async_playwright  # a dev dependency, as in tests

        token = http.headers["Authorization"].removeprefix("Bearer ")
        url = str(http.base_url).rstrip("/") + "/"
        repeats = self.args.inbox_repeats
        renders: dict[str, list[float]] = {"": [], "#sort=expires_at:asc": []}
        filters: list[float] = []
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            context = await browser.new_context(viewport={"width": 1400, "height": 1000})
            # Signed in already, as after a first visit in this tab.
            await context.add_init_script(
                f"sessionStorage.setItem('hitl.token', {json.dumps(token)})"
            )
            for _ in range(repeats):
                for hash, times in renders.items():
                    page = await context.new_page()
                    t0 = time.perf_counter()
                    await page.goto(url + hash)
                    await page.wait_for_selector("#rows .row", timeout=300_000)
                    times.append((time.perf_counter() - t0) * 1000)
                    await page.close()
            page = await context.new_page()
            await page.goto(url)
            await page.wait_for_selector("#rows .row", timeout=300_000)
            for _ in range(repeats):
                await page.fill("#f-tool", "")
                await page.wait_for_selector('#rows:not([data-query*="tool="]) .row')
                await page.focus("#f-tool")
                t0 = time.perf_counter()
                await page.keyboard.type("write_file")
                await page.wait_for_selector(
                    '#rows[data-query*="tool=write_file"] .row', timeout=300_000
                )
                filters.append((time.perf_counter() - t0) * 1000)
            await browser.close()
        for q in (50, 99):
            self.fact(
                f"inbox first rows shown, {paused:,} pending, p{q}",
                percentile(renders[""], q),
                "ms",
            )
        for q in (50, 99):
            self.fact(
                f"inbox first rows shown sorted by expiry, {paused:,} pending, p{q}",
                percentile(renders["#sort=expires_at:asc"], q),
                "ms",
            )
        for q in (50, 99):
            self.fact(
                f"inbox tool filter typed to rows shown, {paused:,} pending, p{q}",
                percentile(filters, q),
                "ms",
            )
        self.note(
            f"inbox: Chromium ({CHROMIUM}) signed in already; first rows: navigation until the "
            f"list shows a row ({repeats} page loads each); filter: typing `write_file` in the "
            f"tool filter (the inbox waits {250} ms after the last key) until the server's "
            "filtered first page shows; sorted by expiry, every pending approval is read"
        )


class ApiProcess:
    """`hitl serve` on a free port, with a reviewers file and the API's signing key."""

    def __init__(self, address: str, reviewers: Path, key: str, log_path: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hitl.cli", "serve", "--port", str(port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "TEMPORAL_ADDRESS": address,
                    "HITL_REVIEWERS": str(reviewers),
                    "HITL_SIGNING_KEY": key,
                },
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"hitl serve did not start; see {log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)


class EventsReader:
    """An /events subscriber noting when each `approval.decided` arrives."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.seen: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.ready.wait(), 120)

    async def _read(self) -> None:
        kind = ""
        async with self.http.stream("GET", "/events", timeout=None) as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                    if kind == "ready":
                        self.ready.set()
                elif line.startswith("data: ") and kind == "approval.decided":
                    self.seen[json.loads(line.removeprefix("data: "))["id"]] = time.time()

    async def decided(self, approval_id: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while approval_id not in self.seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no approval.decided event for {approval_id}")
            await asyncio.sleep(0.005)
        return self.seen[approval_id]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = Path("/proc/meminfo").read_text().split()[1] if Path("/proc/meminfo").exists() else "0"
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(memory) / 1024 / 1024:.0f} GiB",
        "python": platform.python_version(),
        "temporal": temporal_version()[1],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


TARGETS: list[tuple[str, str, Callable[[float, float], bool]]] = [
    ("decision to resume p50", "at most 15 ms", lambda ours, base: ours <= 15),
    ("decision to resume p99", "at most 50 ms", lambda ours, base: ours <= 50),
    (
        "bulk: decisions per second",
        "at least 200/s and 5x the baseline",
        lambda ours, base: ours >= 200 and ours >= 5 * base,
    ),
    ("worker resident memory", "under 300 MB with 10,000 paused", lambda ours, base: ours < 300),
    ("`hitl pending`", "under 2 s over 10,000", lambda ours, base: ours < 2),
    ("overhead per agent step p50", "under 20 ms", lambda ours, base: ours < 20),
    (
        "history per step,",
        "at most 1.5x from the middle length to the longest (linear growth)",
        lambda ours, base: ours <= 1.5,
    ),
    (
        "decide, outcome confirmed p50",
        "the update confirms no later than a signal and its decision log",
        lambda ours, base: ours <= base,
    ),
    (
        "API decision to action start p50",
        "within 15 ms of the signed signal",
        lambda ours, base: ours <= base + 15,
    ),
    ("API first page of 50", "under 1 s over 10,000 pending", lambda ours, base: ours < 1000),
    (
        "/events delay, decided by a signal, 10,000 pending",
        "under 1 s (issue 20)",
        lambda ours, base: ours < 1000,
    ),
    (
        "largest event",
        "under 512 KiB (Temporal's payload limit is 2 MiB)",
        lambda ours, base: ours < 512,
    ),
]

BOUNDS = """\
What bounds the targets that are not met (read with the CPU notes above):

- **Bulk decisions per second** is bound by the dev server's CPU on 2 cores. Per
  decision the server spends about twice what it spends for the baseline, because an
  agent run does about twice the work after a decision: the approved action, the
  model's next turn and the final answer (3 workflow tasks and 2 activities, against
  2 and 1), plus the approval's visibility update. Confirmation queries and the
  visibility updates were each measured away in experiments and each changed the
  rate by under 5%. The baseline itself, doing half the work, stays far below 200/s
  on this server, so 200/s and 5x the baseline are not reachable here by worker
  tuning; a server with a real database on more cores is the lever.
- **`hitl pending` over 10,000** is bound by the server's SQLite visibility store:
  listing only the ids of 10,000 running workflows, with no memo, takes most of the
  time (the baseline column). Partitioned queries in parallel did not help (the
  server is CPU-bound); the project's part, decoding the pending field of each memo,
  is a few tenths of a second. Counting is instant (`count_workflows`).
- **Decision to resume p50** is within a few ms of the baseline; run-to-run noise on
  this machine is about +-2 ms at p50. What is left is the server's dispatch and
  persistence of the workflow task (measured from history event times: ~5 ms to
  dispatch, ~9 ms until completed, for project and baseline alike).
- **Per-step overhead** is one activity round trip (the LLM step) plus one workflow
  task per step; read-only tools already run as local activities. It grows with the
  conversation, since each LLM activity carries the whole message history: about
  20 ms per step for 10-step runs, more for 20-step runs.
"""


def write_report(
    path: Path,
    rows: list[tuple[str, str, str, str, str]],
    args: argparse.Namespace,
    facts: dict[str, str],
    values: dict[str, tuple[float, float]] | None = None,
    notes: list[str] | None = None,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench.run`); not part of CI. The baseline runs in",
        "the same process tree on the same server: a minimal approval workflow written the",
        "obvious way (signal + `wait_condition`, default data converter, default worker).",
        "",
        f"- machine: {facts['cores']} cores, {facts['cpu']}, {facts['memory']}",
        f"- python {facts['python']}; {facts['temporal']}; dev server with a SQLite file",
        f"- run: {facts['date']}; command: `{' '.join(['python -m bench.run', *sys.argv[1:]])}`",
        f"- sizes: latency {args.latency}, bulk {args.bulk}, scale {args.scale}, "
        f"steps {args.steps} x {args.repeats}, growth {args.growth}, api {args.api}",
        "",
        "| measure | project | baseline | project vs baseline | better |",
        "|---|---:|---:|---:|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        "How each is measured:",
        "",
        "1. **Decision to resume**: the bench sends the `approve` signal and notes the time;",
        "   a probe interceptor in the worker process notes when the approved action's activity",
        "   (`run_tool`, or the baseline's activity) starts. Runs are paused first, then",
        "   approved one at a time.",
        "2. **Bulk**: all paused runs are approved through `hitl approve --all`'s library call",
        "   (`Reviews.decide_many`: parallel signals, each confirmed from the run's decision log);",
        "   the baseline signals all runs with the same parallelism. Decisions per second =",
        "   runs / time until every run completed.",
        "3. **Waiting at scale**: resident memory (VmRSS) of each worker process with all runs",
        "   paused; `hitl pending` is `Reviews.pending` (visibility + memo, no per-run query).",
        "   The baseline listing only lists the running workflow ids (it has no approval",
        "   details at all), so it is a lower bound for any listing.",
        "4. **Per-step overhead**: a scripted agent run of N read-only steps through the",
        "   workflow, minus the same loop (scripted model + tool) called in-process, per step.",
        "   The baseline is a loop workflow of two trivial activities per step on a default",
        "   worker (its whole time per step is overhead).",
        "5. **Growth**: scripted runs of 10, 100 and 500 steps, each reading an 8 KiB file;",
        "   the histories of every run in the chain (continue-as-new) are fetched and their",
        "   events counted and sized (protobuf bytes, payloads included). Per-step history",
        "   must stay flat as runs get longer (linear growth), and no single event may come",
        "   near Temporal's 2 MiB payload limit.",
        "6. **Review API**: `hitl serve` in a process of its own, with a reviewers file and a",
        "   signing key, before a worker (its own task queue) that takes only signed decisions,",
        "   with the runs of parts 1 and 2 done (few pending). Decision to action start:",
        "   `POST /approvals/ID/approve` sent until the approved action's activity starts",
        "   (probe), one at a time; the baseline column is the same decision, signed as the",
        "   API signs it, sent as a signal straight to the run. `/events` delay: decision sent",
        "   until a subscriber reads its `approval.decided` event: a decision through the API",
        "   is announced when the run confirms it; one made elsewhere (a signal) is noticed by",
        "   the poller, which every 0.5 s lists the runs whose gate stamped a change",
        "   (`HitlUpdatedAt`) or that ended since it last looked, and lists every pending",
        "   approval once a minute (pausing after a poll as long as the poll took).",
        "7. **Frameworks** (`bench/openai_agents.py`, `bench/pydantic_ai.py`): an approved call",
        "   of each framework's agent, decision sent until the tool starts, through the gate;",
        "   the baseline column is the framework's own approval path resumed by a plain signal.",
        "8. **Review API at scale** (after part 3, every paused run still waiting): first page",
        "   `GET /approvals?limit=50` and the next one, and the `/events` delay of a decision",
        "   made by a signal (10 runs paused after the subscriber's first listing, approved",
        "   one at a time), with every other run still pending.",
        "9. **Backtest** (`bench/backtest.py`, no server): `hitl policy test --from`'s path over",
        "   synthetic approval records in a JSON Lines export, reading included, best of 3;",
        "   predicate rules, then the same decisions as Cedar policies (`cedarpy`).",
        "10. **Telemetry** (`hitl.telemetry`): the same approved runs, in alternating batches",
        "    of 10, on a worker with telemetry on (spans and metrics over OTLP/HTTP to a",
        "    receiver in the bench process, Prometheus served) and one with it off: worker CPU",
        "    per run (start to end, from /proc), decision to the tool's start and to the run's",
        "    result, and the idle worker's CPU per second.",
        "11. **Inbox** (`--parts inbox`, after part 3 or alone; Debian's Chromium, signed in):",
        "    page load until the list shows its first rows, newest runs first and sorted by",
        "    expiry (which reads every pending approval), and a tool filter typed until the",
        "    server's filtered page shows (the inbox waits 250 ms after the last key).",
        "",
    ]
    values = values or {}
    lines += ["## Targets", "", "| target | measured | met |", "|---|---:|---|"]
    for prefix, wanted, met in TARGETS:
        found = [(name, v) for name, v in values.items() if name.startswith(prefix)]
        for name, (ours, base) in found:
            lines.append(
                f"| {name}: {wanted} | {ours:,.1f} | {'yes' if met(ours, base) else 'no'} |"
            )
    lines += ["", "Notes from the run:", ""] + [f"- {note}" for note in notes or []]
    lines += ["", BOUNDS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as scratch:
        root = Path(os.environ.get("HITL_BENCH_DIR") or scratch)
        root.mkdir(parents=True, exist_ok=True)
        server = DevServer(root / "temporal.db", port=free_port(), headless=True)
        with server:
            os.environ["TEMPORAL_ADDRESS"] = server.address
            project = None
            for _ in range(100):
                try:
                    project = await connect(load_settings())
                    break
                except RuntimeError:
                    await asyncio.sleep(0.2)
            assert project is not None
            baseline = await Client.connect(server.address)
            queues = {"project": "bench-project", "baseline": "bench-baseline"}
            workers = {
                kind: WorkerProcess(kind, server.address, queues[kind], root / f"{kind}.probe")
                for kind in queues
            }
            workspace = root / "workspace"
            workspace.mkdir()
            bench = Bench(args, project, baseline, workspace, workers, queues, server)
            try:
                for part in args.parts:
                    await getattr(bench, part)()
            finally:
                for worker in workers.values():
                    worker.stop()
            facts = machine()
    print("\n" + "\n".join(f"{r[0]:48} {r[1]:>14} {r[2]:>14} {r[3]:>8}" for r in bench.rows))
    if args.out:
        write_report(args.out, bench.rows, args, facts, bench.values, bench.notes)
        args.out.with_suffix(".json").write_text(
            json.dumps({"facts": facts, "values": bench.values, "notes": bench.notes}, indent=2)
        )
        print(f"\nWritten to {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=10000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--growth", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--api", type=int, default=100, help="decisions through the API")
    parser.add_argument(
        "--frameworks", type=int, default=20, help="approved calls per agent framework"
    )
    parser.add_argument(
        "--backtest", type=int, default=10_000, help="recorded approvals the backtest replays"
    )
    parser.add_argument(
        "--telemetry", type=int, default=100, help="approved calls, telemetry on and off"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        default=[
            *("latency", "bulk", "steps", "growth", "api", "frameworks", "telemetry"),
            *("scale", "api_scale", "inbox", "backtest"),
        ],
        choices=[
            *("latency", "bulk", "steps", "growth", "api", "frameworks", "telemetry"),
            *("scale", "api_scale", "inbox", "backtest"),
        ],
        help="inbox drives Debian's Chromium (make bench installs it as make test does); "
        "it goes after scale, or alone",
    )
    parser.add_argument(
        "--inbox-repeats", type=int, default=20, help="page loads and filters in the inbox part"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    asyncio.run(main_async(args))
    exit_now(0)


if __name__ == "__main__":
    main()
