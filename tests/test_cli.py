"""The reviewer's CLI, run as a subprocess against a real dev server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.taskqueue.v1 import PollerInfo
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowUpdateInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.cli.common import exit_code
from hitl.cli.render import table
from hitl.decisions import RefusalCode, current_digest, describe_entry, form_of
from hitl.devserver import free_port
from hitl.entry import CLOSED_PIPE
from hitl.models import ApprovalRecord, ApprovalStatus, ApproveDecision, DecisionEntry
from hitl.plugin import HitlPlugin
from hitl.reviewers import load_config, new_key
from hitl.reviews import Outcome, Reviews, polling_lately
from hitl.terminal import outcome_words
from hitl.text import columns, quoted
from hitl.text import visible as escaped
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import approvals, start_run, turn, wait_pending
from tests.processes import WorkerProcess
from tests.usertools.hostile import Ask, HostileApproval
from tests.usertools.payments import Payment, PaymentApproval, pay

pytestmark = pytest.mark.usefixtures("worker")


class Hitl:
    def __init__(self, address: str, task_queue: str) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_"))},
            "TEMPORAL_ADDRESS": address,
            "HITL_TASK_QUEUE": task_queue,
            "HITL_REVIEWER": "cli-reviewer",
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
        }

    async def __call__(
        self, *args: str, stdin: str = "", stdout: Any = asyncio.subprocess.PIPE, **env: str
    ) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hitl.cli",
            *args,
            env={**self.env, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
        assert process.returncode is not None
        return process.returncode, (out or b"").decode(), err.decode()


@pytest.fixture
def hitl(env: WorkflowEnvironment, task_queue: str) -> Hitl:
    return Hitl(env.client.service_client.config.target_host, task_queue)


async def run_starter(hitl: Hitl, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    """`starter.py ARGS` as a user runs it, with answers on standard input."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *args,
        cwd=Path(__file__).resolve().parent.parent,
        env=hitl.env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def visible(client: Client, approval_id: str, pending: bool = True) -> None:
    """Visibility is eventually consistent: wait until the listing shows the approval."""
    query = f"HitlApprovalIds = '{approval_id}'" + (
        " AND HitlPendingApprovals > 0" if pending else ""
    )
    for _ in range(200):
        if [wf async for wf in client.list_workflows(query)]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{approval_id} never became visible")


async def paused_run(
    client: Client, task_queue: str, workspace: Path
) -> tuple[WorkflowHandle, ApprovalRecord]:
    """A cleanup run waiting on its one approval, already listed by visibility."""
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    await visible(client, record.id)
    return handle, record


async def test_pending_and_show_list_and_explain_an_approval(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    handle, record = await paused_run(client, task_queue, workspace)

    code, out, _ = await hitl("pending", "--json")
    assert code == 0
    [mine] = [item for item in json.loads(out) if item["id"] == record.id]
    for field in (
        "id",
        "session_id",
        "status",
        "action_json",
        "preview",
        "created_at",
        "expires_at",
        "reviewer",
        "reviewed_at",
        "modified_action_json",
        "reason",
    ):
        assert field in mine
    assert mine["session_id"] == handle.id and mine["status"] == "pending"
    assert mine["action_json"]["tool"] == "delete_files"
    assert sorted(mine["action_json"]["args"]["paths"]) == sorted(OLD_LOGS)
    code, out, _ = await hitl("pending")
    assert code == 0 and record.id in out and "delete 3 files" in out and "LEFT" in out
    code, out, err = await hitl("pending", "--tool", "send_email", "--json")
    assert code == 0, err
    assert record.id not in [item["id"] for item in json.loads(out)]

    code, out, _ = await hitl("show", record.id)
    assert code == 0
    for expected in [
        *OLD_LOGS,
        "Delete all log files older than 7 days",
        "scripted model",
        "delete_files",
        "Risk:",
        "Expires:",
    ]:
        assert expected in out
    code, out, err = await hitl("show", record.id, "--json")
    assert code == 0 and json.loads(out)["preview"]["facts"]["existing"] == 3, err

    code, out, err = await hitl("runs", "--state", "awaiting_approval", "--json")
    assert code == 0, err
    [run] = [item for item in json.loads(out) if item["id"] == handle.id]
    assert run["pending"] == 1 and run["task"] == "Delete all log files older than 7 days"
    await handle.signal(contract.SIGNAL_REJECT, {"approval_id": record.id, "reviewer": "x"})
    await handle.result()


async def test_approve_applies_and_every_later_decision_is_refused(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    handle, record = await paused_run(client, task_queue, workspace)

    code, out, err = await hitl("approve", record.id, "--comment", "routine cleanup")
    assert code == 0, err
    # The update answers with the log entry alone: no record, so no "()" where the action
    # used to go; between brackets goes only what the run answered.
    assert out == f"{record.id} in run {handle.id}: approved by cli-reviewer.\n"
    result = await handle.result()
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    assert result.approvals[0].reviewer == "cli-reviewer"

    # The run has ended: a second decision is refused, saying by whom it was decided.
    code, out, err = await hitl("reject", record.id, "--reason", "changed my mind")
    assert code == 1 and "approved by cli-reviewer" in err and "Traceback" not in err
    code, out, err = await hitl("audit", handle.id)
    assert code == 0 and "approve by cli-reviewer: applied (routine cleanup)" in out
    code, out, err = await hitl("audit", handle.id, "--json")
    [audited] = json.loads(out)["approvals"]
    assert audited["status"] == "approved" and audited["decisions"][0]["outcome"] == "applied"


async def test_refusals_exit_1_with_the_reason_and_leave_the_approval_pending(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    handle, record = await paused_run(client, task_queue, workspace)

    code, _, err = await hitl("modify", record.id, "--args", "{paths: nope")
    assert code == 1 and "not valid JSON" in err
    code, _, err = await hitl("modify", record.id, "--args", '{"paths": []}')
    assert code == 1 and "modified arguments are invalid for delete_files" in err
    code, _, err = await hitl("approve", "apr_0000000000000000")
    assert code == 1 and "no run has an approval apr_0000000000000000" in err
    code, _, err = await hitl("approve", record.id, "--digest", "deadbeefdeadbeef")
    assert code == 1 and "look at it again" in err
    stale = ("--digest", "0" * 16, "--json")
    code, out, err = await hitl("reject", record.id, "--reason", "r", *stale)
    assert code == 1, err
    refused = json.loads(out)
    assert (refused["approval_id"], refused["outcome"]) == (record.id, "refused")
    assert "look at it again" in refused["refusal"] and refused["entry"]["outcome"] == "refused"
    # The code scripts branch on (None only from a worker that records no codes yet).
    assert refused["code"] == "stale_action"
    [still] = await wait_pending(handle)
    assert still.id == record.id

    # A second decision while the run is still running is refused by the run itself.
    code, out, err = await hitl("modify", record.id, "--args", json.dumps({"paths": OLD_LOGS[:1]}))
    assert code == 0 and f"{record.id} in run {handle.id}: modified by cli-reviewer" in out, err
    # It reminds of what runs now, not of the proposal ("delete 3 files").
    assert f'delete_files with {{"paths": ["{OLD_LOGS[0]}"]}}.' in out, out
    assert record.preview.summary not in out
    code, _, err = await hitl("approve", record.id)
    assert code == 1 and ("already modified by cli-reviewer" in err or "has already ended" in err)
    result = await handle.result()
    assert result.approvals[0].status is ApprovalStatus.MODIFIED
    assert files_in(workspace) == sorted(OLD_LOGS[1:] + NEW_LOGS + OTHER)


async def test_a_decision_after_the_timeout_is_refused(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    wait = turn(("run_command", {"argv": ["true"]}))
    handle = await start_run(
        client,
        task_queue,
        workspace,
        script=[turn(("delete_files", {"paths": OLD_LOGS})), wait],
        tool_approval_timeouts={"delete_files": 1},
    )
    [record] = await wait_pending(handle)
    for _ in range(100):  # the delete times out; the run then waits on the command
        if len(await approvals(handle)) == 2:
            break
        await asyncio.sleep(0.05)
    code, _, err = await hitl("approve", record.id)
    assert code == 1 and "timed out" in err
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)
    await handle.terminate("test done")


async def test_review_takes_piped_answers(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    script = [
        turn(
            ("delete_files", {"paths": [OLD_LOGS[0]]}),
            ("delete_files", {"paths": [OLD_LOGS[1]]}),
            ("delete_files", {"paths": [OLD_LOGS[2]]}),
        )
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    await wait_pending(handle, count=3)
    edited = json.dumps({"paths": [NEW_LOGS[0]]})
    code, out, err = await hitl(
        "review", "--run", handle.id, stdin=f"y\nn\nnot this one\ne\n{edited}\n"
    )
    assert code == 0, err
    assert out.count("Approve? [y/n/e(dit)]:") == 3 and "[3/3]" in out
    result = await handle.result()
    assert [r.status for r in result.approvals] == [
        ApprovalStatus.APPROVED,
        ApprovalStatus.REJECTED,
        ApprovalStatus.MODIFIED,
    ]
    assert result.approvals[1].reason == "not this one"
    # Approvals are reviewed in the order they were created, which is the order their
    # previews finished, not necessarily the order of the model's calls.
    approved, rejected, _ = (record.action_json.args["paths"][0] for record in result.approvals)
    assert approved not in files_in(workspace) and rejected in files_in(workspace)
    assert NEW_LOGS[0] not in files_in(workspace), "the modified arguments ran"
    assert len(files_in(workspace)) == len(OLD_LOGS + NEW_LOGS + OTHER) - 2


def test_a_worker_that_stopped_is_not_counted_as_polling() -> None:
    """The server lists a stopped worker for minutes after its last poll; `hitl doctor`
    said "1 polling ... All good." with no worker running."""
    now = datetime.now(UTC)

    def poller(identity: str, seconds_ago: float) -> PollerInfo:
        info = PollerInfo(identity=identity)
        info.last_access_time.FromDatetime(now - timedelta(seconds=seconds_ago))
        return info

    pollers = [poller("live@host", 5), poller("stopped@host", 240)]
    assert [p.identity for p in polling_lately(pollers, now)] == ["live@host"]
    assert polling_lately([poller("stopped@host", 240)], now) == []


async def test_doctor_reports_the_set_up_and_a_server_that_is_down(hitl: Hitl) -> None:
    code, out, _ = await hitl("doctor")
    assert code == 0, out
    for expected in [
        "temporalio",
        "temporal version",
        "env TEMPORAL_ADDRESS",
        "server        up",
        "search attrs  registered",
        "workers       1 polling",
        "All good.",
    ]:
        assert expected in out
    down = f"127.0.0.1:{free_port()}"
    code, out, _ = await hitl("doctor", TEMPORAL_ADDRESS=down)
    assert code == 1 and "DOWN" in out and "make server" in out
    code, out, err = await hitl("pending", TEMPORAL_ADDRESS=down)
    assert code == 2 and "cannot reach the Temporal server" in err and "make server" in err
    assert "Traceback" not in err and err.count("\n") == 1
    code, _, err = await hitl("approve")
    assert code == 2 and "give the approval id" in err
    # The worker says it in a sentence too, not only in its JSON log line.
    code, out, _ = await hitl("worker", TEMPORAL_ADDRESS=down)
    assert code == 2 and "worker: cannot reach the Temporal server" in out, out


async def test_starter_reviews_inline_and_writes_evidence(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence.json"
    code, text = await run_starter(
        hitl,
        "Delete all log files older than 7 days",
        "--workspace",
        str(workspace),
        "--review",
        "inline",
        "--evidence",
        str(evidence),
        "--reviewer",
        "inline-reviewer",
        stdin=b"y\n",
    )
    assert code == 0, text
    assert "Starting state:" in text and "temporalio" in text and "scripted" in text
    assert "Approve? [y/n/e(dit)]:" in text and "approved by inline-reviewer." in text
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)
    data = json.loads(evidence.read_text())
    assert data["state"] == "completed" and "Deleted 3 file(s)" in data["answer"]
    assert "starter.py" in data["origin"]["command"]
    assert data["origin"]["versions"]["temporalio"]
    assert data["model"]["provider"] == "scripted"
    assert data["approvals"][0]["reviewer"] == "inline-reviewer"
    assert data["started_at"] <= data["finished_at"]


async def test_starter_no_wait_returns_and_the_run_waits_for_the_cli(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    code, text = await run_starter(
        hitl,
        "Delete all log files older than 7 days",
        "--workspace",
        str(workspace),
        "--no-wait",
        "--id",
        f"nowait-{task_queue}",
    )
    assert code == 0 and "decide:  hitl approve ID" in text, text
    assert "refuses an unsigned `temporal workflow signal`" in text
    handle = client.get_workflow_handle(f"nowait-{task_queue}")
    [record] = await wait_pending(handle)
    await visible(client, record.id)
    code, out, err = await hitl("reject", record.id, "--reason", "not today")
    assert code == 0 and f"{record.id} in run {handle.id}: rejected by cli-reviewer" in out, err
    await handle.result()
    assert files_in(workspace) == sorted(OLD_LOGS + NEW_LOGS + OTHER)


async def test_a_starter_that_only_waits_says_which_hitl_command_decides(
    hitl: Hitl, workspace: Path
) -> None:
    # Not a terminal, so no inline review: it waits (here until the approval times out).
    code, text = await run_starter(
        hitl, "Delete all log files older than 7 days", "--workspace", str(workspace),
        "--approval-timeout", "1s",
    )  # fmt: skip
    assert code == 0, text
    approval_id = text.split("Waiting for a decision on ", 1)[1].split(";", 1)[0]
    assert f"hitl approve {approval_id}  (or hitl reject {approval_id} --reason" in text
    assert "temporal workflow signal" not in text and '"reviewer": "you"' not in text
    assert "no decision came within" in text


async def test_approve_all_decides_every_pending_approval_of_a_tool(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    email = turn(("send_email", {"to": "ops@example.com", "subject": "s", "body": "b"}))
    mails = [await start_run(client, task_queue, workspace, script=[email]) for _ in range(3)]
    other = await start_run(client, task_queue, workspace)
    ids = [(await wait_pending(handle))[0].id for handle in mails]
    [kept] = await wait_pending(other)
    for approval_id in [*ids, kept.id]:
        await visible(client, approval_id)
    code, out, err = await hitl("approve", "--all", "--tool", "send_email")
    assert code == 0, err
    assert all(
        f"{approval_id} in run {handle.id}: approved by cli-reviewer: send_email" in out
        for approval_id, handle in zip(ids, mails, strict=True)
    )
    assert kept.id not in out
    for handle in mails:
        assert (await handle.result()).approvals[0].status is ApprovalStatus.APPROVED
    assert len(list((workspace / "outbox").iterdir())) == 3
    [still] = await wait_pending(other)
    assert still.id == kept.id
    code, _, err = await hitl("approve", kept.id, "--all")
    assert code == 2 and "not both" in err
    await other.terminate("test done")


async def test_approve_all_signed_with_a_reviewers_own_key_binds_each_to_the_listed_action(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker with keys takes only signed decisions that name their action: a bulk
    approve names, for each approval, the action it listed (it used to send none, and
    every one was refused)."""
    ann_key = new_key()
    # The api key signs the runs' starts (tests.helpers.start_run); ann signs her decisions.
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{new_key()},ann:{ann_key}")
    email = turn(("send_email", {"to": "ops@example.com", "subject": "s", "body": "b"}))
    mails = [await start_run(client, task_queue, workspace, script=[email]) for _ in range(2)]
    ids = [(await wait_pending(handle))[0].id for handle in mails]
    for approval_id in ids:
        await visible(client, approval_id)
    code, out, err = await hitl(
        "approve", "--all", "--tool", "send_email", "--reviewer", "ann",
        HITL_SIGNER="ann", HITL_SIGNING_KEY=ann_key,
    )  # fmt: skip
    assert code == 0, err + out
    for handle in mails:
        [record] = (await handle.result()).approvals
        assert record.status is ApprovalStatus.APPROVED
        [entry] = [e for e in record.decisions if e.outcome == "applied"]
        assert (entry.reviewer, entry.issuer) == ("ann", "ann")


# A name that, printed raw, erases its own line and goes back to column 0 to show a
# harmless one, and reasoning that writes the clipboard (OSC 52) and moves the cursor up.
DISGUISED = "logs/important.db\x1b[2K\rharmless.log"
REASONING = "\x1b]52;c;cm0gLXJmIH4=\x07Deleting the old log.\x1b[1A\x1b[2K\u202e"


def assert_no_terminal_controls(out: str) -> None:
    for control in ("\x1b", "\r", "\x07", "\x9b", "\u202e"):
        assert control not in out, f"{control!r} reached the terminal"


async def test_escape_sequences_in_a_path_cannot_change_what_hitl_show_displays(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    (workspace / DISGUISED).write_text("the file that really goes")
    (workspace / "harmless.log").write_text("the file the reviewer is shown")
    script = [turn(("delete_files", {"paths": [DISGUISED]}), content=REASONING)]
    handle = await start_run(client, task_queue, workspace, script=script)
    [record] = await wait_pending(handle)
    await visible(client, record.id)

    # Wide enough that no line is wrapped in the middle of what is looked for.
    code, out, err = await hitl("show", record.id, COLUMNS="300")
    assert code == 0, err
    assert_no_terminal_controls(out)
    # The arguments and the preview's file list both show the real name, escaped; no
    # line shows the bait alone.
    assert out.count(quoted(DISGUISED)) == 2, out
    assert all("important.db" in line for line in out.splitlines() if "harmless" in line)
    assert "Deleting the old log.\\x1b[1A" in out  # the reasoning
    code, out, _ = await hitl("show", record.id, "--json")
    assert code == 0
    assert_no_terminal_controls(out)
    assert json.loads(out)["action_json"]["args"]["paths"] == [DISGUISED]

    code, out, _ = await hitl("pending")
    assert code == 0 and record.id in out
    assert_no_terminal_controls(out)
    code, out, _ = await hitl("pending", "--json")
    assert code == 0
    assert_no_terminal_controls(out)
    [mine] = [item for item in json.loads(out) if item["id"] == record.id]
    assert mine["action_json"]["args"]["paths"] == [DISGUISED]

    # What was shown is what runs: the disguised file goes, the harmless one stays.
    code, out, err = await hitl("approve", record.id)
    assert code == 0, err
    await handle.result()
    assert not (workspace / DISGUISED).exists() and (workspace / "harmless.log").exists()


async def test_escape_sequences_in_a_path_cannot_change_what_hitl_audit_displays(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path
) -> None:
    (workspace / DISGUISED).write_text("the file that really goes")
    script = [turn(("delete_files", {"paths": [DISGUISED]}), content=REASONING)]
    handle = await start_run(client, task_queue, workspace, script=script)
    [record] = await wait_pending(handle)
    # The run refuses a reviewer name with control characters but keeps what it was sent;
    # a Hangul filler is printable, so "eve" + filler decides, looking like "eve".
    refused_reviewer = "eve\x1b[8m"
    lookalike = "eve\u3164"
    reason = "keep it\x1b[2K\r\x9b1Aapproved by admin"
    for reviewer in (refused_reviewer, lookalike):
        await handle.signal(
            contract.SIGNAL_REJECT,
            {"approval_id": record.id, "reviewer": reviewer, "reason": reason},
        )
    await handle.result()

    code, out, err = await hitl("audit", handle.id, COLUMNS="300")
    assert code == 0, err
    assert_no_terminal_controls(out)
    assert "\u3164" not in out
    assert quoted(DISGUISED) in out
    assert f"reject by {escaped(refused_reviewer)}: refused" in out
    assert f"rejected by {escaped(lookalike)}" in out and "eve\\u3164" in out
    assert escaped(reason) in out
    code, out, _ = await hitl("audit", handle.id, "--json")
    assert code == 0
    assert_no_terminal_controls(out)
    [audited] = json.loads(out)["approvals"]
    assert audited["reason"] == reason and audited["reviewer"] == lookalike
    assert (workspace / DISGUISED).exists()


async def test_reviewers_quorum_writes_the_rule_and_approve_says_the_votes_so_far(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path = tmp_path / "reviewers.toml"
    for name in ("ann", "ben"):
        code, _, err = await hitl("reviewers", "add", name, "--file", str(path))
        assert code == 0, err
    quorum = ("reviewers", "quorum", "--min-risk", "30", "--file", str(path))
    code, _, err = await hitl(*quorum, "--approvals", "3")
    assert code == 0, err
    code, out, err = await hitl(*quorum, "--approvals", "2")  # the rule for risk 30, replaced
    assert code == 0 and "quorum: risk >= 30 needs 2 approvers" in out, err
    code, _, err = await hitl(*quorum)
    assert code == 2 and "--approvals K" in err
    code, out, err = await hitl(
        "reviewers", "policy", "--auto-approve-below", "10", "--no-standing", "--file", str(path)
    )
    assert code == 0 and "standing approvals turned off" in out, err
    assert "approval timeout 30 min (the default)" in out
    policy = ("reviewers", "policy", "--file", str(path))
    code, out, err = await hitl(*policy, "--approval-timeout", "10m")
    assert code == 0 and "approval timeout 10 min for tools" in out, err
    # Setting one thing keeps the rest: a timeout dropped would lengthen every approval's.
    code, out, err = await hitl(*policy, "--no-standing")
    assert code == 0 and "approval timeout 10 min for tools" in out, err
    code, _, err = await hitl(*policy, "--approval-timeout", "soon")
    assert code == 2 and "is not a duration" in err
    config = load_config(path)  # what the worker reads
    assert [(rule.min_risk, rule.approvals) for rule in config.quorum] == [(30, 2)]
    assert (config.policy.auto_approve_below, config.policy.standing) == (10, False)
    assert config.policy.approval_timeout == 600
    assert set(config.reviewers) == {"ann", "ben"}

    monkeypatch.setenv("HITL_REVIEWERS", str(path))  # the in-process worker reads it
    handle, record = await paused_run(client, task_queue, workspace)
    assert record.risk >= 30 and record.quorum == 2
    code, out, err = await hitl("approve", record.id, "--reviewer", "ann")
    assert code == 0, err
    assert out == (
        f"{record.id} in run {handle.id}: approval by ann recorded (1 of 2 approvals); it waits "
        "for more approvers.\n"
    )
    code, out, err = await hitl("approve", record.id, "--reviewer", "ben")
    assert code == 0, err
    assert out == f"{record.id} in run {handle.id}: approved by ben (2 of 2 approvals).\n"
    result = await handle.result()
    assert [vote.reviewer for vote in result.approvals[0].votes] == ["ann", "ben"]


@pytest.mark.parametrize("args", [["runs", "--json"], ["pending", "--json"], ["doctor"]])
async def test_a_closed_pipe_ends_a_command_quietly(hitl: Hitl, args: list[str]) -> None:
    # `hitl runs --json | head`: the reader has gone before the command writes. Unbuffered,
    # so the first line already meets the closed pipe, as a long listing does.
    read, write = os.pipe()
    os.close(read)
    try:
        code, _, err = await hitl(*args, stdout=write, PYTHONUNBUFFERED="1")
    finally:
        os.close(write)
    assert (code, err) == (CLOSED_PIPE, "")


async def test_runs_with_a_state_nothing_publishes_names_the_states(hitl: Hitl) -> None:
    code, out, err = await hitl("runs", "--state", "complete")  # a typo of completed
    assert code == 0, err
    assert out.startswith("No runs that use the gate. (state complete); the states the gate")
    assert "completed" in out and "awaiting_approval" in out


async def test_runs_says_what_a_workflow_of_your_own_is_about(hitl: Hitl, client: Client) -> None:
    queue = f"tq-payout-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[PaymentApproval],
        activities=[pay],
        plugins=[HitlPlugin()],
    ):
        handle = await client.start_workflow(
            PaymentApproval.run,
            Payment(payee="ACME", amount=950),
            id=f"payout-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        [record] = await wait_pending(handle)
        await visible(client, record.id)
        code, out, err = await hitl("runs", "--state", "awaiting_approval", "--json")
        assert code == 0, err
        [run] = [item for item in json.loads(out) if item["id"] == handle.id]
        # No task of its own: the request its pending approval was asked with.
        assert (run["workflow_type"], run["task"]) == ("PaymentApproval", "monthly supplier payout")
        code, out, _ = await hitl("runs", COLUMNS="300")
        assert code == 0
        [line] = [line for line in out.splitlines() if handle.id in line]
        assert "awaiting_approval" in line and line.endswith("monthly supplier payout")
        code, out, _ = await hitl("runs", "--help")
        assert code == 0 and "runs that use the gate" in out and "agent runs" not in out
        await handle.signal(contract.SIGNAL_REJECT, {"approval_id": record.id, "reviewer": "x"})
        assert (await handle.result()).startswith("not paid")
        # Ended: listed as completed (the gate said so as the workflow returned), never
        # as running or waiting.
        for _ in range(200):
            code, out, _ = await hitl("runs", "--state", "completed", "--json")
            if any(item["id"] == handle.id for item in json.loads(out)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the ended run was never listed as completed")
        for state in ("running", "awaiting_approval"):
            code, out, _ = await hitl("runs", "--state", state, "--json")
            assert handle.id not in [item["id"] for item in json.loads(out)], state
        # Ended without its gate (terminated while waiting): not listed as waiting either.
        stopped = await client.start_workflow(
            PaymentApproval.run,
            Payment(payee="ACME", amount=5),
            id=f"payout-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        [waiting] = await wait_pending(stopped)
        await visible(client, waiting.id)
        await stopped.terminate("gone")
        for _ in range(100):
            code, out, _ = await hitl("runs", "--state", "awaiting_approval", "--json")
            if stopped.id not in [item["id"] for item in json.loads(out)]:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a terminated run is still listed as awaiting approval")


async def test_approve_after_a_worker_crash_exits_0_once_the_run_applied_it(
    hitl: Hitl, env: WorkflowEnvironment, client: Client, tmp_path: Path
) -> None:
    address = env.client.service_client.config.target_host
    queue = f"tq-crash-{uuid.uuid4().hex[:8]}"
    first = await WorkerProcess(address, queue).start()
    second: WorkerProcess | None = None
    try:
        handle = await start_run(client, queue, make_logs(tmp_path / "ws"))
        [record] = await wait_pending(handle)
        await visible(client, record.id)
        await first.kill()
        began = time.perf_counter()
        approving = asyncio.create_task(hitl("approve", record.id))
        await asyncio.sleep(1)
        # The new worker takes the run over only once Temporal gives up on the dead
        # worker's sticky queue (10 s): later than the CLI's first 5 s.
        second = await WorkerProcess(address, queue).start()
        code, out, err = await approving
        took = time.perf_counter() - began
        print(f"\nhitl approve across a worker crash: exit {code} after {took:.1f} s")
        assert code == 0, err
        assert out == f"{record.id} in run {handle.id}: approved by cli-reviewer.\n"
        result = await handle.result()
        # Sent once: no second copy refused as "already approved" in the log.
        [approval] = result.approvals
        assert [(d.outcome, d.reviewer) for d in approval.decisions] == [
            ("applied", "cli-reviewer")
        ]
    finally:
        await first.kill()
        if second is not None:
            await second.stop()


class _LoseUpdateAnswers(Interceptor):
    """A connection that fails after the update reached the run, before its answer came."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _LosingOutbound(next)


class _LosingOutbound(OutboundInterceptor):
    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        await super().start_workflow_update(input)
        raise RPCError("connection reset by peer", RPCStatusCode.UNAVAILABLE, b"")


async def test_a_decision_whose_answer_was_lost_is_confirmed_and_not_sent_again(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle, record = await paused_run(client, task_queue, workspace)
    lossy = Client(**{**client.config(), "interceptors": [_LoseUpdateAnswers()]})
    outcome = await Reviews(lossy, signer=None).decide(
        ApproveDecision(approval_id=record.id, reviewer="cli-reviewer"), workflow_id=handle.id
    )
    assert outcome.applied, outcome
    result = await handle.result()
    assert [entry.outcome for entry in result.approvals[0].decisions] == ["applied"]


HEAVY = ("openai", "fastapi", "uvicorn", "hitl.toolkits", "hitl.plugin", "activities", "workflows")


@pytest.mark.parametrize(
    "program",
    [
        "import hitl.cli",
        "import asyncio, hitl.cli\ntry:\n    asyncio.run(hitl.cli.run(['pending', '--help']))\n"
        "except SystemExit as done:\n    assert done.code == 0, done.code",
    ],
)
def test_the_cli_loads_no_worker_model_client_or_web_framework(program: str) -> None:
    """`hitl pending` starts fast: the worker's toolkits, the model client and FastAPI load
    only in `hitl worker` and `hitl serve`."""
    check = f"{program}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
    check += f"{[name.split('.')[0] for name in HEAVY]!r} and m.startswith({HEAVY!r})))"
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


# Rich markup, an emoji code, a link and a line erased: shown as written, nothing drawn.
HOSTILE_TOOL = "[bold red]rm[/]:fire:"
HOSTILE_SUMMARY = "[link=https://evil]ok[/link] :warning:\x1b[2K\rharmless"


async def test_a_hostile_tool_name_and_summary_show_literally_in_pending(
    hitl: Hitl, client: Client
) -> None:
    queue = f"tq-hostile-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[HostileApproval],
        plugins=[HitlPlugin()],
    ):
        handle = await client.start_workflow(
            HostileApproval.run,
            Ask(tool=HOSTILE_TOOL, summary=HOSTILE_SUMMARY),
            id=f"hostile-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
        )
        [record] = await wait_pending(handle)
        await visible(client, record.id)
        for columns in ("300", "60"):
            code, out, err = await hitl("pending", COLUMNS=columns)
            assert code == 0, err
            assert_no_terminal_controls(out)
            [line] = [line for line in out.splitlines() if record.id in line]
            assert HOSTILE_TOOL in line  # the brackets and the colons, as written
        code, out, err = await hitl("pending", COLUMNS="300")
        [line] = [line for line in out.splitlines() if record.id in line]
        assert escaped(HOSTILE_SUMMARY) in line and "\\x1b[2K\\r" in line, line
        code, out, err = await hitl("pending", "--json", "--tool", HOSTILE_TOOL)
        assert code == 0, err
        [mine] = json.loads(out)
        assert (mine["tool"], mine["preview"]["summary"]) == (HOSTILE_TOOL, HOSTILE_SUMMARY)
        await handle.signal(contract.SIGNAL_REJECT, {"approval_id": record.id, "reviewer": "x"})
        assert await handle.result() == "rejected"


async def modified_quorum_approval(
    hitl: Hitl,
    client: Client,
    task_queue: str,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **env: str,
) -> tuple[WorkflowHandle, ApprovalRecord]:
    """An approval two reviewers must approve, that ben modified: its action is now the
    modification, which the second approver decides on."""
    path = tmp_path / "reviewers.toml"
    for name in ("ann", "ben"):
        code, _, err = await hitl("reviewers", "add", name, "--file", str(path))
        assert code == 0, err
    code, _, err = await hitl(
        "reviewers", "quorum", "--min-risk", "30", "--approvals", "2", "--file", str(path)
    )
    assert code == 0, err
    monkeypatch.setenv("HITL_REVIEWERS", str(path))  # the in-process worker reads it
    handle, record = await paused_run(client, task_queue, workspace)
    assert record.quorum == 2
    code, out, err = await hitl(
        "modify", record.id, "--reviewer", "ben", "--args", json.dumps({"paths": OLD_LOGS[:1]}),
        **env,
    )  # fmt: skip
    assert code == 0, err
    assert f"{record.id} in run {handle.id}: modification by ben recorded (1 of 2 " in out
    [modified] = [r for r in await approvals(handle) if r.id == record.id]
    assert modified.status is ApprovalStatus.PENDING and modified.modified_action_json
    return handle, modified


async def test_a_signed_approve_decides_a_quorums_modification_not_a_stale_action(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The signature binds the decision to the action a decision now decides: the
    modification, not the action first proposed (refused as stale before)."""
    api_key, ann_key = new_key(), new_key()
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{api_key},ann:{ann_key}")
    as_api = {"HITL_SIGNER": "api", "HITL_SIGNING_KEY": api_key}
    handle, record = await modified_quorum_approval(
        hitl, client, task_queue, workspace, tmp_path, monkeypatch, **as_api
    )
    code, out, err = await hitl(
        "approve", record.id, "--reviewer", "ann", HITL_SIGNER="ann", HITL_SIGNING_KEY=ann_key
    )
    assert code == 0, err
    assert out == f"{record.id} in run {handle.id}: approved by ann (2 of 2 approvals).\n"
    result = await handle.result()
    assert result.approvals[0].status in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED)
    assert files_in(workspace) == sorted(OLD_LOGS[1:] + NEW_LOGS + OTHER)


async def test_review_answering_y_decides_a_quorums_modification_not_a_stale_action(
    hitl: Hitl, client: Client, task_queue: str, workspace: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    handle, record = await modified_quorum_approval(
        hitl, client, task_queue, workspace, tmp_path, monkeypatch
    )
    # `show` names the digest a decision names now: the modification's.
    code, out, err = await hitl("show", record.id, COLUMNS="300")
    assert code == 0 and f"(digest {current_digest(record)})" in out, err
    code, out, err = await hitl("review", "--run", handle.id, "--reviewer", "ann", stdin="y\n")
    assert code == 0, err
    assert f"{record.id} in run {handle.id}: " in out and "(2 of 2 approvals)" in out, out
    result = await handle.result()
    assert result.approvals[0].status in (ApprovalStatus.APPROVED, ApprovalStatus.MODIFIED)
    assert files_in(workspace) == sorted(OLD_LOGS[1:] + NEW_LOGS + OTHER)


def _entry(**fields: Any) -> DecisionEntry:
    base: dict[str, Any] = {
        "kind": "approve",
        "reviewer": "ann",
        "received_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "outcome": "applied",
    }
    return DecisionEntry.model_validate(base | fields)


def test_what_became_of_a_decision_is_told_from_its_code_never_its_sentence() -> None:
    assert describe_entry(_entry()) == "approved by ann"
    assert describe_entry(_entry(kind="reject")) == "rejected by ann"
    assert describe_entry(_entry(note="2 of 2 approvals")) == "approved by ann (2 of 2 approvals)"
    assert describe_entry(_entry(note="1 of 2 approvals")) == (
        "approval by ann recorded (1 of 2 approvals); it waits for more approvers"
    )
    assert describe_entry(_entry(kind="revoke")) == "standing approval revoked by ann"
    # A sentence that reads like success is still a refusal, with the code's words.
    sentence = "approved by ann"
    refused = _entry(outcome="refused", refusal=sentence, code="already_decided")
    assert describe_entry(refused) == f"refused (already decided): {sentence}"
    assert describe_entry(refused.model_copy(update={"code": None})) == f"refused: {sentence}"
    assert describe_entry(refused.model_copy(update={"code": "from_the_future"})) == (
        f"refused: {sentence}"
    )
    outcome = Outcome("apr_1", "run-1", ApproveDecision(approval_id="apr_1", reviewer="ann"))
    outcome.entry = refused
    assert exit_code(outcome) == form_of(RefusalCode.ALREADY_DECIDED).exit == 1
    outcome.entry = _entry()
    assert exit_code(outcome) == 0
    outcome.entry = None  # sent, not confirmed: not known to be refused
    assert exit_code(outcome) == 2
    outcome.rejected, outcome.code = "unreadable", "malformed"
    assert exit_code(outcome) == form_of(RefusalCode.MALFORMED).exit
    assert outcome_words(outcome) == "refused (unreadable decision): unreadable"


def test_a_table_shows_markup_literally_and_fits_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    hostile = ["[bold]x[/]", ":smile:", "[link=https://evil]y[/link] " + "z" * 80]
    drawn = table([hostile], ["A", "B", "C"], fit=2)
    header, row = drawn.splitlines()
    assert header.split() == ["A", "B", "C"]
    assert row.startswith("[bold]x[/]  :smile:  [link=https://evil]y[/link] zzz")
    assert max(columns(line) for line in drawn.splitlines()) <= 60
    assert row.endswith("…")  # cut, never wrapped onto a line of its own
