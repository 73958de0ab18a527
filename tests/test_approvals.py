"""The guide's scenario and the approval checkpoint, against a real Temporal dev server."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from hitl import contract
from hitl.models import ApprovalStatus, RunState
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import (
    CLEANUP_TASK,
    approvals,
    assert_replays,
    decision,
    start_run,
    status,
    temporal_cli,
    turn,
    wait_decisions,
    wait_pending,
)
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")


async def test_approve_deletes_exactly_the_old_logs(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)

    # What the reviewer sees: the request, the reasoning, the exact action and its effect.
    assert record.action_json.tool == "delete_files"
    assert sorted(record.action_json.args["paths"]) == sorted(OLD_LOGS)
    assert record.context.original_request == CLEANUP_TASK
    assert "scripted model" in record.context.reasoning
    listed = {item["path"]: item for item in record.preview.facts["files"]}
    assert sorted(listed) == sorted(OLD_LOGS)
    assert all(listed[name]["size"] == 500 and listed[name]["exists"] for name in OLD_LOGS)
    assert all(name in record.preview.details for name in OLD_LOGS)
    assert record.preview.summary.startswith("delete 3 files")
    assert record.expires_at - record.created_at == timedelta(minutes=30)
    assert record.session_id == handle.id and record.risk > 0
    # The run is findable while it waits: search attributes and memo, no per-run query.
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(contract.STATE_KEY) == "awaiting_approval"
    assert attributes.get(contract.PENDING_KEY) == 1
    assert attributes.get(contract.APPROVAL_IDS_KEY) == [record.id]
    memo = await description.memo()
    assert [item["id"] for item in memo[contract.MEMO_PENDING]] == [record.id]
    listing = [
        wf.id
        async for wf in client.list_workflows(
            f"HitlState = 'awaiting_approval' AND WorkflowId = '{handle.id}'"
        )
    ]
    assert listing == [handle.id]
    assert (await status(handle)).state is RunState.AWAITING_APPROVAL
    # The Web UI's "current details" say what the run waits for.
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    # Markdown (the UI renders it) with untrusted text escaped: delete\_files.
    assert metadata.current_details.startswith(r"awaiting approval: delete\_files, delete 3 files")
    assert record.id in metadata.current_details and "expires" in metadata.current_details
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER), "nothing before approval"

    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, comment="old logs, fine"))
    result = await handle.result()

    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    assert result.state is RunState.COMPLETED
    assert "Deleted 3 file(s)" in result.answer
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "alice"
    assert done.reviewed_at is not None and done.result is not None and done.result.ok
    assert [(d.kind.value, d.outcome) for d in done.decisions] == [("approve", "applied")]
    assert result.evidence["model"]["answered_by"] == ["scripted-offline"]
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(contract.STATE_KEY) == "completed"
    assert attributes.get(contract.PENDING_KEY) == 0
    await assert_replays(handle)


async def test_reject_deletes_nothing_and_the_agent_reports_it(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    await handle.signal(
        contract.SIGNAL_REJECT, decision(record.id, "bob", reason="keep them for the audit")
    )
    result = await handle.result()

    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED
    assert done.reviewer == "bob" and done.reason == "keep them for the audit"
    assert "keep them for the audit" in result.answer and "Nothing was deleted" in result.answer
    # The model was told the reason and not to retry the same action.
    [delete_run] = [run for run in result.tool_runs if run.tool == "delete_files"]
    assert "REJECTED by bob" in (delete_run.result.error or "")
    assert "Do not retry the same action" in (delete_run.result.error or "")


async def test_modify_runs_the_modified_arguments_and_keeps_both(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    keep_one = [OLD_LOGS[0]]
    await handle.signal(
        contract.SIGNAL_MODIFY, decision(record.id, "carol", args={"paths": keep_one})
    )
    result = await handle.result()

    assert files_in(workspace) == sorted(OLD_LOGS[1:] + NEW_LOGS + OTHER)
    [done] = result.approvals
    assert done.status is ApprovalStatus.MODIFIED and done.reviewer == "carol"
    assert sorted(done.action_json.args["paths"]) == sorted(OLD_LOGS)
    assert done.modified_action_json is not None
    assert done.modified_action_json.args == {"paths": keep_one}
    assert done.modified_preview is not None and done.modified_preview.facts["existing"] == 1
    assert "Deleted 1 file(s)" in result.answer


async def test_invalid_and_late_decisions_are_refused_and_the_approval_survives(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)

    # Arguments that fail the tool's validation: refused, still pending.
    await handle.signal(contract.SIGNAL_MODIFY, decision(record.id, args={"paths": []}))
    # Unknown approval id: refused at the run level.
    await handle.signal(contract.SIGNAL_APPROVE, decision("apr_doesnotexist"))
    # Malformed: no reviewer; and not even an object.
    await handle.signal(contract.SIGNAL_APPROVE, {"approval_id": record.id})
    await handle.signal(contract.SIGNAL_REJECT, "just reject it")
    # Bound to the exact action: a decision made on another action is refused.
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, action_digest="0" * 16))

    log = await wait_decisions(handle, record.id, 3)
    assert [entry.outcome for entry in log] == ["refused"] * 3
    assert "modified arguments are invalid for delete_files" in (log[0].refusal or "")
    assert "still pending" in (log[0].refusal or "")
    assert "reviewer: Field required" in (log[1].refusal or "")
    assert "look at it again" in (log[2].refusal or "")
    refused = await wait_decisions(handle, None, 2)
    assert "unknown approval id apr_doesnotexist" in refused[0].refusal
    assert "malformed reject decision" in refused[1].refusal
    [still] = await wait_pending(handle)
    assert still.id == record.id and (await status(handle)).state is RunState.AWAITING_APPROVAL

    # The first valid decision wins; the ones after it are refused with who and when.
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "dave", decision_id="d-first"))
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, "erin", reason="too late"))
    result = await handle.result()
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "dave"
    assert [(d.kind.value, d.outcome) for d in done.decisions[-2:]] == [
        ("approve", "applied"),
        ("reject", "refused"),
    ]
    assert done.decisions[-2].decision_id == "d-first"
    assert "already approved by dave" in (done.decisions[-1].refusal or "")
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    await assert_replays(handle)


async def test_a_per_tool_timeout_auto_rejects(
    client: Client, task_queue: str, workspace: Path
) -> None:
    # A tool-specific override of the run's timeout, short enough to wait for here.
    handle = await start_run(
        client,
        task_queue,
        workspace,
        approval_timeout_seconds=600,
        tool_approval_timeouts={"delete_files": 1.5},
    )
    [record] = await wait_pending(handle)
    assert record.expires_at - record.created_at == timedelta(seconds=1.5)
    result = await handle.result()
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED and done.reviewer == "system:timeout"
    assert "no decision came within 1.5 s" in (done.reason or "")
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_decision_after_timeout_is_refused_while_run_continues(
    client: Client, task_queue: str, workspace: Path
) -> None:
    script = [
        turn(("delete_files", {"paths": [OLD_LOGS[0]]})),
        turn(("delete_files", {"paths": [OLD_LOGS[1]]})),
    ]
    handle = await start_run(
        client,
        task_queue,
        workspace,
        script=script,
        tool_approval_timeouts={"delete_files": 1},
    )
    [first] = await wait_pending(handle)
    # Wait for the second approval: by then the first has timed out.
    deadline = asyncio.get_running_loop().time() + 20
    while len(await approvals(handle)) < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await handle.signal(contract.SIGNAL_APPROVE, decision(first.id, "frank"))
    log = await wait_decisions(handle, first.id, 2)
    assert log[0].kind.value == "timeout"
    assert log[1].outcome == "refused" and "timed out" in (log[1].refusal or "")
    second = (await approvals(handle))[1]
    await handle.signal(contract.SIGNAL_APPROVE, decision(second.id, "frank"))
    result = await handle.result()
    assert [r.status for r in result.approvals] == [
        ApprovalStatus.REJECTED,
        ApprovalStatus.APPROVED,
    ]
    assert OLD_LOGS[0] in files_in(workspace) and OLD_LOGS[1] not in files_in(workspace)


async def test_decision_through_the_temporal_cli(
    env, client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    address = env.client.service_client.config.target_host
    common = ["--address", address, "--workflow-id", handle.id]
    query = await temporal_cli("workflow", "query", *common, "--name", "approvals")
    assert record.id in query and "delete_files" in query
    payload = json.dumps({"approval_id": record.id, "reviewer": "cli-user", "comment": "ok"})
    await temporal_cli("workflow", "signal", *common, "--name", "approve", "--input", payload)
    result = await handle.result()
    assert result.approvals[0].reviewer == "cli-user"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


async def test_parallel_flagged_calls_are_decided_independently(
    client: Client, task_queue: str, workspace: Path
) -> None:
    script = [
        turn(
            ("delete_files", {"paths": [OLD_LOGS[0]]}),
            ("write_file", {"path": "config/app.yaml", "content": "level: debug\n"}),
            ("find_files", {"pattern": "*.yaml"}),
        )
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    pending = await wait_pending(handle, count=2)
    by_tool = {record.action_json.tool: record for record in pending}
    assert "+level: debug" in by_tool["write_file"].preview.details  # the diff

    # The second is approved first and runs at once, while the first still waits.
    await handle.signal(contract.SIGNAL_APPROVE, decision(by_tool["write_file"].id))
    deadline = asyncio.get_running_loop().time() + 10
    while (workspace / "config/app.yaml").read_text() != "level: debug\n":
        assert asyncio.get_running_loop().time() < deadline, "approved write did not run"
        await asyncio.sleep(0.05)
    [still] = await wait_pending(handle)
    assert still.id == by_tool["delete_files"].id
    assert OLD_LOGS[0] in files_in(workspace)

    await handle.signal(
        contract.SIGNAL_REJECT, decision(by_tool["delete_files"].id, reason="not yet")
    )
    result = await handle.result()
    assert OLD_LOGS[0] in files_in(workspace)
    assert [run.tool for run in result.tool_runs] == ["find_files", "write_file", "delete_files"]
    await assert_replays(handle)


async def test_an_action_identical_to_a_rejected_one_is_refused_without_asking(
    client: Client, task_queue: str, workspace: Path
) -> None:
    same = ("delete_files", {"paths": [OLD_LOGS[0]]})
    handle = await start_run(client, task_queue, workspace, script=[turn(same), turn(same)])
    [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_REJECT, decision(record.id, reason="never"))
    result = await handle.result()
    assert len(result.approvals) == 1, "the repeat was not asked again"
    repeat = result.tool_runs[-1]
    assert repeat.approval_id is None
    assert "already rejected in this run" in (repeat.result.error or "")
    assert "never" in (repeat.result.error or "")
    assert OLD_LOGS[0] in files_in(workspace)


async def test_bad_tool_calls_go_back_to_the_model_and_the_run_continues(
    client: Client, task_queue: str, workspace: Path
) -> None:
    script = [
        turn(
            ("delete_files", "{not json"),
            ("format_disk", {}),
            ("delete_files", {"paths": "logs/app-today.log"}),
            ("find_files", {"pattern": "*.log", "recursive": True}),
            ("read_file", {"path": "../outside.txt"}),
            ("read_file", {"path": "/etc/passwd"}),
        ),
        turn(("read_file", {"path": "config/app.yaml"})),
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    result = await handle.result()
    errors = [run.result.error or "" for run in result.tool_runs]
    assert any("not valid JSON" in error for error in errors)
    assert any("unknown tool format_disk; the tools of this run are" in error for error in errors)
    assert any("paths: Input should be a valid list" in error for error in errors)
    assert any("recursive: Extra inputs are not permitted" in error for error in errors)
    assert any("leads out of the workspace" in error for error in errors)
    assert any("is an absolute path" in error for error in errors)
    assert result.tool_runs[-1].result.ok, "the run went on after the errors"
    assert result.approvals == [] and result.state is RunState.COMPLETED
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_step_limit_ends_the_run_with_a_clear_state(
    client: Client, task_queue: str, workspace: Path
) -> None:
    look = turn(("find_files", {"pattern": "*.log"}))
    handle = await start_run(client, task_queue, workspace, script=[look, look, look], max_steps=2)
    result = await handle.result()
    assert result.state is RunState.STEP_LIMIT and result.steps == 2
    assert "Stopped after 2 steps" in result.answer


async def test_the_workers_policy_auto_approves_below_its_risk_threshold(
    client: Client,
    task_queue: str,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = tmp_path / "reviewers.toml"
    monkeypatch.setenv("HITL_REVIEWERS", str(policy))
    # delete_files of the old logs scores 42. At the threshold and under it a person
    # decides: "auto-approve below 42" does not approve risk 42.
    for threshold in (42, 41):
        policy.write_text(f"[policy]\nauto_approve_below = {threshold}\n")
        handle = await start_run(client, task_queue, make_logs(tmp_path / f"ws-{threshold}"))
        [record] = await wait_pending(handle)
        assert record.risk == 42, "the cases below are chosen around this risk"
        assert record.reviewer is None and record.decisions == [], threshold
        await handle.terminate("done")
    policy.write_text("[policy]\nauto_approve_below = 43\n")
    handle = await start_run(client, task_queue, workspace)
    result = await handle.result()
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "policy"
    assert "risk 42 is below the auto-approve threshold 43 (the worker's policy)" in (
        done.reason or ""
    )
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


async def test_a_pending_approval_survives_a_worker_restart(
    client: Client, workspace: Path
) -> None:
    task_queue = "tq-restart"
    async with build_worker(client, task_queue):
        handle = await start_run(client, task_queue, workspace)
        [record] = await wait_pending(handle)
    # No worker now: the decision waits in history, the approval in the server.
    await handle.signal(contract.SIGNAL_APPROVE, decision(record.id, "after-restart"))
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
    async with build_worker(client, task_queue, max_cached_workflows=0):
        result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.approvals[0].reviewer == "after-restart"
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
