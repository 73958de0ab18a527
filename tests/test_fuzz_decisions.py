"""Property-based fuzzing of decisions through the real client and the `temporal` CLI.

For every generated payload the run ends up exactly where its validity says: a valid
decision is applied, anything else is refused with a reason, the approval stays
pending, and the run answers queries and can still finish.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.decisions import DECISION_MODELS
from hitl.devserver import temporal_binary
from hitl.models import ApprovalRecord, ApprovalStatus, DecisionKind, RunResult, RunStatus
from hitl.tools import load_tools
from tests.background import Background
from tests.conftest import make_logs
from tests.helpers import approvals, start_run, status, wait_pending
from tests.soak import SCALE

SIGNALS = [contract.SIGNAL_APPROVE, contract.SIGNAL_REJECT, contract.SIGNAL_MODIFY]
EXAMPLES = 120 * SCALE

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
reviewers = st.sampled_from(["alice", "", " ", "system:timeout", "policy", "Policy:x"]) | st.text(
    max_size=30
)
field_names = st.sampled_from(
    ["approval_id", "reviewer", "comment", "reason", "args", "decision_id", "action_digest", "kind"]
)


class Runs:
    """A supply of runs waiting on an approval: a new one once a decision lands."""

    def __init__(self, bg: Background, root: Path) -> None:
        self.bg, self.root = bg, root
        self.handle: WorkflowHandle[Any, RunResult] | None = None
        self.record: ApprovalRecord | None = None

    def current(self) -> tuple[WorkflowHandle[Any, RunResult], ApprovalRecord]:
        if self.handle is None or self.record is None:
            workspace = make_logs(self.root / uuid.uuid4().hex[:8])
            self.handle = self.bg.run(start_run(self.bg.client, self.bg.task_queue, workspace))
            [self.record] = self.bg.run(wait_pending(self.handle))
        return self.handle, self.record


def _expected_valid(name: str, payload: Any, record: ApprovalRecord) -> bool:
    if not isinstance(payload, dict) or payload.get("approval_id") != record.id:
        return False
    if payload.get("kind") not in (None, name):
        return False
    fields = {key: value for key, value in payload.items() if key != "kind"}
    try:
        decision = DECISION_MODELS[DecisionKind(name)].model_validate(fields)
    except ValidationError:
        return False
    if decision.action_digest is not None and decision.action_digest != record.action_digest:
        return False
    if name == contract.SIGNAL_MODIFY:
        try:
            load_tools()[record.action_json.tool].validate(payload["args"])
        except ValidationError:
            return False
    return len(json.dumps(payload, default=str)) < 90_000


def _check(runs: Runs, name: str, payload: Any, send: Any) -> None:
    handle, record = runs.current()
    before_records = runs.bg.run(approvals(handle))
    before = sum(len(r.decisions) + r.refused_dropped for r in before_records)
    run: RunStatus = runs.bg.run(status(handle))
    before += len(run.refused_decisions) + run.refused_dropped
    send(handle, name, payload)

    async def settle() -> tuple[list[ApprovalRecord], RunStatus]:
        for _ in range(500):
            records = await approvals(handle)
            current: RunStatus = await status(handle)
            total = sum(len(r.decisions) + r.refused_dropped for r in records)
            total += len(current.refused_decisions) + current.refused_dropped
            if total > before:
                return records, current
            await asyncio.sleep(0.01)
        raise AssertionError(f"{name} {payload!r:.200} never reached the run's log")

    records, current = runs.bg.run(settle())
    [mine] = [r for r in records if r.id == record.id]
    valid = _expected_valid(name, payload, record)
    if valid:
        assert mine.status is not ApprovalStatus.PENDING, f"valid {name} not applied: {payload!r}"
        assert mine.decisions[-1].outcome == "applied"
        runs.bg.run(handle.result(), timeout=60)
        runs.handle = runs.record = None
    else:
        assert mine.status is ApprovalStatus.PENDING, f"invalid {name} applied: {payload!r:.300}"
        assert current.state.value == "awaiting_approval"
        refusals = [e.refusal for e in mine.decisions if e.outcome == "refused"]
        refusals += [item.refusal for item in current.refused_decisions]
        assert all(refusals), "every refusal says why"


def _signal(bg: Background) -> Any:
    def send(handle: WorkflowHandle, name: str, payload: Any) -> None:
        bg.run(handle.signal(name, payload))

    return send


@pytest.fixture(scope="module")
def bg(env: WorkflowEnvironment) -> Any:
    address = env.client.service_client.config.target_host
    with Background(address, f"tq-fuzz-{uuid.uuid4().hex[:8]}") as background:
        yield background


def _payloads(record_id: str) -> Any:
    near_valid = st.fixed_dictionaries(
        {
            "approval_id": st.sampled_from([record_id] * 3) | st.text(max_size=20),
            "reviewer": st.sampled_from(["alice", "bob"]) | reviewers,
        },
        optional={
            "comment": st.text(max_size=50) | json_values,
            "reason": st.text(max_size=50) | json_values,
            "args": json_values
            | st.fixed_dictionaries({"paths": st.lists(st.text(max_size=30), max_size=3)}),
            "decision_id": st.text(max_size=20) | json_values,
            "action_digest": st.text(max_size=20) | json_values,
            "kind": st.sampled_from(["approve", "reject", "modify", "timeout", "policy"]),
            "extra": json_values,
        },
    )
    return near_valid | json_values


def test_fuzzed_decisions_through_the_client_are_applied_only_when_valid(bg: Background) -> None:
    runs = Runs(bg, Path(tempfile.mkdtemp()))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(name=st.sampled_from(SIGNALS), data=st.data())
    def fuzz(name: str, data: st.DataObject) -> None:
        _, current = runs.current()
        payload = data.draw(_payloads(current.id))
        _check(runs, name, payload, _signal(bg))

    fuzz()
    handle, record = runs.current()
    bg.run(handle.signal(contract.SIGNAL_REJECT, {"approval_id": record.id, "reviewer": "end"}))
    assert bg.run(handle.result()).approvals[-1].status is ApprovalStatus.REJECTED


def _cli(address: str) -> Any:
    def send(handle: WorkflowHandle, name: str, payload: Any) -> None:
        command = [
            temporal_binary(),
            "workflow",
            "signal",
            "--address",
            address,
            "--workflow-id",
            handle.id,
            "--name",
            name,
        ]
        if isinstance(payload, bytes):
            command += [
                "--input-meta",
                "encoding=binary/plain",
                "--input-base64",
                "--input",
                base64.b64encode(payload).decode(),
            ]
        elif payload is not _NO_INPUT:
            command += ["--input", json.dumps(payload)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    return send


_NO_INPUT = object()


def test_fuzzed_decisions_through_the_temporal_cli_are_applied_only_when_valid(
    bg: Background, env: WorkflowEnvironment
) -> None:
    runs = Runs(bg, Path(tempfile.mkdtemp()))
    send = _cli(env.client.service_client.config.target_host)

    @settings(
        max_examples=40 * SCALE,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    @given(name=st.sampled_from(SIGNALS), data=st.data())
    def fuzz(name: str, data: st.DataObject) -> None:
        _, current = runs.current()
        payload = data.draw(_payloads(current.id) | st.binary(max_size=64) | st.just(_NO_INPUT))
        _check(runs, name, payload, send)

    fuzz()
