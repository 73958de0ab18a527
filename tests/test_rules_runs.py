"""Auto-approval rules in real runs: the reference agent on a real dev server, the
worker's rules file (`HITL_RULES`) read by its check activity, and the backtest over what
those runs recorded (`hitl policy test --since`)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.backtest import backtest
from hitl.cli import run as hitl
from hitl.models import ApprovalOutcome, ApprovalStatus, DecisionKind, RunResult
from hitl.plugin import HitlPlugin
from hitl.reviews import Reviews
from hitl.rules import load_rules
from hitl.tools import tool
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import (
    CLEANUP_TASK,
    assert_replays,
    decision,
    start_run,
    turn,
    wait_decisions,
    wait_pending,
)
from tests.test_gate_api import Ask, AskingWorkflow
from worker import build_worker

OLD_LOGS_RULE = """
mode = "{mode}"

[[rule]]
name = "old-logs"
effect = "{effect}"
reason = "{reason}"
tool = "delete_files"
risk = {{ lt = 50 }}
args = {{ path = "paths.0", prefix = "logs/" }}
"""


@pytest.fixture
def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """The worker's rules file, read by its check activity as it is now."""
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)

    def write(
        text: str | None = None,
        *,
        mode: str = "act",
        effect: str = "approve",
        reason: str = "old logs are routine",
    ) -> Path:
        path = tmp_path / "rules.toml"
        path.write_text(
            text
            if text is not None
            else OLD_LOGS_RULE.format(mode=mode, effect=effect, reason=reason)
        )
        monkeypatch.setenv("HITL_RULES", str(path))
        return path

    return write


def reviewers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "reviewers.toml"
    path.write_text(text)
    monkeypatch.setenv("HITL_REVIEWERS", str(path))


async def test_a_rule_approves_a_low_stakes_call_without_a_person(
    client: Client, task_queue: str, worker: Worker, workspace: Path, rules_file: Any
) -> None:
    path = rules_file()
    digest = load_rules(path).digest  # type: ignore[union-attr]
    handle = await start_run(client, task_queue, workspace)
    result = await asyncio.wait_for(handle.result(), 30)
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "policy"
    assert done.rule is not None and done.outcome == "auto"
    assert (done.rule.rule, done.rule.verdict, done.rule.policy_digest) == (
        "old-logs",
        "approve",
        digest,
    )
    [entry] = done.decisions
    assert entry.kind is DecisionKind.POLICY
    assert entry.reason == f"approved by rule old-logs (rules {digest}): old logs are routine"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    await assert_replays(handle)


async def test_a_deny_rule_rejects_at_once_and_the_agent_reads_its_reason(
    client: Client, task_queue: str, worker: Worker, workspace: Path, rules_file: Any
) -> None:
    rules_file(effect="deny", reason="logs are kept for the auditors")
    result = await asyncio.wait_for((await start_run(client, task_queue, workspace)).result(), 30)
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED and done.reviewer == "policy"
    assert done.rule is not None and done.rule.verdict == "deny" and done.outcome == "auto"
    told = next(run.result for run in result.tool_runs if run.tool == "delete_files")
    assert "REJECTED by policy: logs are kept for the auditors; by rule old-logs" in (
        told.error or ""
    )
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_a_rule_never_stands_in_for_a_quorum(
    client: Client,
    task_queue: str,
    worker: Worker,
    workspace: Path,
    rules_file: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules_file()
    reviewers(tmp_path, monkeypatch, "[[quorum]]\nmin_risk = 0\napprovals = 2\n")
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    assert record.quorum == 2 and record.rule is None and record.decisions == []
    assert any(
        "rule 'old-logs' would approve, but the call needs 2 approvers" in warning
        for warning in record.preview.warnings
    )
    for reviewer in ("ann", "bob"):
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, reviewer))
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.approvals[0].reviewer == "ann, bob"
    assert result.approvals[0].outcome == "approved"


async def test_a_rule_that_fails_asks_a_person_and_turns_the_threshold_off(
    client: Client,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    rules_file: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker's threshold alone would approve risk 42.
    reviewers(tmp_path, monkeypatch, "[policy]\nauto_approve_below = 101\n")
    rules_file(
        'mode = "act"\n[[rule]]\nname = "typo"\neffect = "approve"\n'
        'args = { path = "paths", prefix = "logs/" }\n'
    )
    handle = await start_run(client, task_queue, make_logs(tmp_path / "one"))
    [record] = await wait_pending(handle)
    assert record.rule is None and record.decisions == []
    assert any(
        "rule 'typo' could not judge this call, so a person decides" in w
        and "tests a string, but the value is a list" in w
        for w in record.preview.warnings
    )
    await handle.terminate("seen")
    rules_file('mode = "act"\n[[rule]]\nname = "unfinished"\neffect = \n')
    handle = await start_run(client, task_queue, make_logs(tmp_path / "two"))
    [record] = await wait_pending(handle)
    assert record.decisions == [] and any(
        "is not valid TOML" in w and "a person decides" in w for w in record.preview.warnings
    )
    await handle.terminate("seen")


@tool(requires_approval=True, risk=10, auto_approve=False)
def ring_bell(times: int = 1) -> str:
    """Ring the office bell: harmless, but the team wants a person to say so."""
    return "ding " * times


async def test_a_tool_defined_to_always_ask_is_never_approved_by_a_rule_or_threshold(
    client: Client,
    task_queue: str,
    workspace: Path,
    tmp_path: Path,
    rules_file: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules_file('mode = "act"\n[[rule]]\nname = "bells"\neffect = "approve"\ntool = "ring_*"\n')
    reviewers(tmp_path, monkeypatch, "[policy]\nauto_approve_below = 101\n")
    async with build_worker(client, task_queue, tools=["builtin", ring_bell]):
        handle = await start_run(
            client, task_queue, workspace, script=[turn(("ring_bell", {"times": 2}))]
        )
        [record] = await wait_pending(handle)
        assert record.rule is None and record.decisions == []
        assert any(
            "rule 'bells' would approve, but its tool is defined to always ask a person" in w
            for w in record.preview.warnings
        )
        await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "ann"))
        result = await asyncio.wait_for(handle.result(), 30)
    assert result.approvals[0].reviewer == "ann"


async def test_shadow_mode_records_the_verdict_beside_the_persons_decision(
    client: Client, task_queue: str, worker: Worker, workspace: Path, rules_file: Any
) -> None:
    path = rules_file(mode="shadow")
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    assert record.rule is None and record.shadow is not None
    assert (record.shadow.rule, record.shadow.verdict) == ("old-logs", "approve")
    assert record.shadow.policy_digest == load_rules(path).digest  # type: ignore[union-attr]
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, "ann", reason="keep them"))
    result = await asyncio.wait_for(handle.result(), 30)
    [done] = result.approvals
    assert done.outcome == "rejected" and done.reviewer == "ann"
    assert done.shadow is not None and done.shadow.verdict == "approve"
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_a_runs_input_can_only_make_the_rules_stricter(
    client: Client, task_queue: str, worker: Worker, tmp_path: Path, rules_file: Any
) -> None:
    rules_file()
    # The run turned automatic approval off: a person decides what the rule would approve.
    handle = await start_run(client, task_queue, make_logs(tmp_path / "off"), auto_approve_below=0)
    [record] = await wait_pending(handle)
    assert record.rule is None and any(
        "rule old-logs would approve this call, but the run turned automatic approval off" in w
        for w in record.preview.warnings
    )
    await handle.terminate("seen")
    # A rule in the run's input is no rule: only the worker's file has them.
    rules_file('mode = "act"\n[[rule]]\nname = "other"\neffect = "deny"\ntool = "nothing"\n')
    handle = await client.start_workflow(
        contract.WORKFLOW_NAME,
        {
            "task": CLEANUP_TASK,
            "workspace": str(make_logs(tmp_path / "input")),
            "rules": [{"name": "anything", "effect": "approve"}],
            "HITL_RULES": "/tmp/mine.toml",
        },
        id=f"test-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
        result_type=RunResult,
    )
    [record] = await wait_pending(handle)
    assert record.rule is None and record.status is ApprovalStatus.PENDING
    await handle.terminate("seen")


async def test_a_rule_trusts_a_requester_only_when_a_signed_start_proved_it(
    client: Client,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    rules_file: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules_file(
        'mode = "act"\n[[rule]]\nname = "dana-cleans"\neffect = "approve"\n'
        'requester = "dana"\ntool = "delete_files"\n'
    )
    claimed = await start_run(
        client, task_queue, make_logs(tmp_path / "claimed"), requested_by="dana", signing=None
    )
    [record] = await wait_pending(claimed)
    assert record.rule is None and not record.context.requester_verified
    await claimed.terminate("seen")
    key = base64.urlsafe_b64encode(b"k" * 32).decode()
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{key}")
    proven = await start_run(
        client, task_queue, make_logs(tmp_path / "proven"), requested_by="dana"
    )
    result = await asyncio.wait_for(proven.result(), 30)
    [done] = result.approvals
    assert done.context.requester_verified and done.rule is not None
    assert done.rule.rule == "dana-cleans" and done.status is ApprovalStatus.APPROVED


async def test_the_gates_ask_path_applies_the_same_rules(
    client: Client, task_queue: str, rules_file: Any
) -> None:
    rules_file(
        'mode = "act"\n'
        '[[rule]]\nname = "no-big-wires"\neffect = "deny"\nreason = "wires over 10k need a call"\n'
        'tool = "wire_money"\nargs = { path = "amount", gt = 10000 }\n'
        '[[rule]]\nname = "small-wires"\neffect = "approve"\ntool = "wire_money"\n'
    )
    async with Worker(
        client, task_queue=task_queue, workflows=[AskingWorkflow], plugins=[HitlPlugin()]
    ):

        async def ask(amount: int, quorum: int = 1) -> Any:
            return await client.start_workflow(
                AskingWorkflow.run,
                Ask(tool="wire_money", args={"to": "ACME", "amount": amount}, quorum=quorum),
                id=f"ask-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                result_type=ApprovalOutcome,
            )

        denied = await asyncio.wait_for((await ask(50_000)).result(), 20)
        assert denied.status is ApprovalStatus.REJECTED and denied.reviewer == "policy"
        assert (denied.reason or "").startswith("wires over 10k need a call; by rule no-big-wires")
        approved = await asyncio.wait_for((await ask(100)).result(), 20)
        assert approved.approved and approved.reviewer == "policy"
        # The workflow asks for two approvers: the rule doesn't stand in for them.
        handle = await ask(100, quorum=2)
        [record] = await wait_pending(handle)
        assert record.quorum == 2 and record.rule is None
        await handle.terminate("seen")


async def test_the_backtest_replays_rules_over_what_runs_recorded(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    worker: Worker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("HITL_RULES", raising=False)
    monkeypatch.delenv("HITL_REVIEWERS", raising=False)
    since = datetime.now(UTC)
    decided = {}
    for name, kind, extra in (
        ("kept", contract.SIGNAL_REJECT, {"reason": "the auditors want them"}),
        ("cleaned", contract.SIGNAL_APPROVE, {}),
    ):
        handle = await start_run(client, task_queue, make_logs(tmp_path / name))
        [record] = await wait_pending(handle)
        await handle.signal(kind, decision(record.id, "ann", **extra))
        await asyncio.wait_for(handle.result(), 30)
        decided[name] = record.id
    proposed = tmp_path / "proposed.toml"
    proposed.write_text(OLD_LOGS_RULE.format(mode="act", effect="approve", reason="routine"))
    rules = load_rules(proposed)
    assert rules is not None
    # Other tests' runs share the dev server (some on queues no worker polls any more):
    # the backtest is of this test's two.
    problems: list[str] = []
    ours = [r async for r in Reviews(client).records(since, problems=problems)]
    report = backtest(rules, [r for r in ours if r.id in decided.values()])
    assert report.decided == 2 and report.removed == 2
    [dangerous] = report.dangerous
    assert (dangerous.id, dangerous.outcome, dangerous.reviewer) == (
        decided["kept"],
        "rejected",
        "ann",
    )
    assert dangerous.reason == "the auditors want them"
    # The same through the command line, as a team checks a rule before turning it on.
    monkeypatch.setenv("TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
    code = await hitl(["policy", "test", str(proposed), "--since", since.isoformat(), "--json"])
    printed = capsys.readouterr().out  # the in-process worker logs to it too
    out = json.loads(printed[printed.index("\n{\n") :])
    assert code == 1
    assert decided["kept"] in {case["id"] for case in out["dangerous"]}
    assert out["policy_digest"] == rules.digest


async def test_a_reviewer_can_not_modify_a_call_into_one_a_rule_denies(
    client: Client, task_queue: str, worker: Worker, workspace: Path, rules_file: Any
) -> None:
    # "A deny always stands": the old-logs call matches no rule and waits for a person, who
    # must not be able to turn it into the deletion the worker's rules forbid.
    rules_file(
        'mode = "act"\n[[rule]]\nname = "keep-config"\neffect = "deny"\n'
        'reason = "config is managed by the platform team"\ntool = "delete_files"\n'
        'args = { path = "paths.0", prefix = "config/" }\n'
    )
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    assert record.rule is None
    await handle.signal(
        contract.SIGNAL_MODIFY, decision(record.id, args={"paths": ["config/app.yaml"]})
    )
    [entry] = await wait_decisions(handle, record.id, 1)
    assert entry.outcome == "refused"
    assert "rule keep-config denies the modified call" in (entry.refusal or "")
    assert "config is managed by the platform team" in (entry.refusal or "")
    [still] = await wait_pending(handle)
    assert still.id == record.id
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="no"))
    await asyncio.wait_for(handle.result(), 30)
    assert "config/app.yaml" in files_in(workspace)
    await assert_replays(handle)
