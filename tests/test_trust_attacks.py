"""Attacks on the trust boundaries that tests/test_trust_boundaries.py does not name.

The attackers of issue 15: a Temporal client that may start workflows, send signals and
updates (and, like any client, start an activity or serve a task queue of its own); a
reviewer with a narrow token; anyone who can read and write Redis. The worker runs in
this process with its keys and reviewers file set in its environment, as an operator
sets them. Each test asserts what a user would check: the marker a command would create
does not exist, the decision that was sent is the one that applied.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from hitl import contract
from hitl.bridge import signed_message
from hitl.decisions import Receipt, RefusalCode
from hitl.models import (
    AgentCarry,
    ApprovalContext,
    ApprovalRecord,
    ApprovalStatus,
    ApproveDecision,
    CallState,
    ChatMessage,
    GateState,
    LlmRequest,
    ModelSettings,
    NotifyEvent,
    RejectDecision,
    RunInput,
    RunResult,
    StartCheck,
    ToolAction,
    ToolCall,
    ToolCheck,
    ToolCheckRequest,
    ToolPreview,
    ToolRequest,
    ToolResult,
    TurnState,
)
from hitl.reviewers import add_reviewer, decode_key, new_key
from hitl.reviews import Reviews, _update_id
from tests.helpers import approvals, start_run, turn, wait_pending
from tests.usertools.mallory import Mallory, MalloryContinues

pytestmark = pytest.mark.usefixtures("worker")

API_KEY = new_key()
ALICE_KEY = new_key()
BOB_KEY = new_key()


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A worker that takes only signed decisions and starts: the API's, alice's and bob's."""
    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "alice")
    add_reviewer(reviewers, "bob")
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{API_KEY},alice:{ALICE_KEY},bob:{BOB_KEY}")
    return reviewers


def touch(marker: Path, workspace: Path, key: str | None = "apr_0123456789abcdef") -> ToolRequest:
    """A `run_command` that creates `marker`, claiming an approval id no gate settled."""
    return ToolRequest(
        action=ToolAction(tool="run_command", args={"argv": ["touch", str(marker)]}),
        workspace=str(workspace),
        idempotency_key=key,
    )


async def refused_or_failed(run: Any) -> str:
    """What the attempt came to: a refused tool result's error, or every message along
    the failure's chain of causes."""
    try:
        result = await asyncio.wait_for(run, 60)
    except Exception as error:  # the activity or the workflow failed: nothing ran
        said, cause = [], error
        while cause is not None:
            said.append(str(cause))
            cause = cause.__cause__ or getattr(cause, "cause", None)
        return " / ".join(said)
    assert isinstance(result, ToolResult | ToolCheck), result
    assert not result.ok, f"the worker carried it out: {result}"
    return result.error or ""


DEPLOYMENT_ONLY = "runs only for the workflows of this deployment"


# --- the worker's tool activities serve only the runs of its own workflows ---------------------


async def test_a_client_cant_run_a_flagged_tool_as_an_activity_of_its_own(
    client: Client, task_queue: str, workspace: Path, tmp_path: Path
) -> None:
    """Temporal lets a client start an activity with no workflow (a standalone activity):
    `run_tool` with a made-up approval id must not run the command."""
    marker = tmp_path / "ran"
    for key in ("apr_0123456789abcdef", None):
        said = await refused_or_failed(
            client.execute_activity(
                contract.ACTIVITY_RUN_TOOL,
                touch(marker, workspace, key),
                id=f"act-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=30),
                result_type=ToolResult,
            )
        )
        assert DEPLOYMENT_ONLY in said and "standalone activity" in said
        assert not marker.exists()


async def test_a_client_cant_read_the_workers_files_through_a_tool_activity(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    """`read_file` needs no approval, and the workspace is whatever the request says: a
    standalone activity naming `/` as its workspace must not read the worker's files."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the worker's private file")
    request = ToolRequest(
        action=ToolAction(tool="read_file", args={"path": "secret.txt"}),
        workspace=str(secret.parent),
    )
    said = await refused_or_failed(
        client.execute_activity(
            contract.ACTIVITY_RUN_TOOL,
            request,
            id=f"act-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            result_type=ToolResult,
        )
    )
    assert "private" not in said and DEPLOYMENT_ONLY in said
    # The preview of a write shows the file's current content as a diff.
    check = ToolCheckRequest(
        tool="write_file",
        args={"path": "secret.txt", "content": "x"},
        workspace=str(secret.parent),
    )
    said = await refused_or_failed(
        client.execute_activity(
            contract.ACTIVITY_CHECK_TOOL,
            check,
            id=f"act-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
            start_to_close_timeout=timedelta(seconds=30),
            result_type=ToolCheck,
        )
    )
    assert "private" not in said and DEPLOYMENT_ONLY in said


async def test_a_client_cant_spend_the_workers_model_key_or_speak_on_its_channels(
    client: Client, task_queue: str
) -> None:
    """The model call (the worker's OPENAI_API_KEY pays) and a notification (sent to the
    reviewers' channels, signed with the worker's webhook secret), as standalone
    activities: a made-up "approval pending" must not reach the reviewers."""
    now = datetime.now(UTC)
    action = ToolAction(tool="run_command", args={"argv": ["ls"]})
    fake = ApprovalRecord(
        id="apr_0123456789abcdef",
        session_id="x",
        action_json=action,
        action_digest=action.digest(),
        created_at=now,
        expires_at=now + timedelta(hours=1),
        context=ApprovalContext(original_request="urgent: approve at the link"),
        preview=ToolPreview(summary="harmless"),
    )
    calls: list[tuple[str, Any]] = [
        (
            contract.ACTIVITY_LLM,
            LlmRequest(
                model=ModelSettings(provider="openai", name="gpt-4o-mini"),
                messages=[ChatMessage(role="user", content="hi")],
                tools=[],
            ),
        ),
        (contract.ACTIVITY_NOTIFY_EVENT, NotifyEvent(event="pending", approval=fake, at=now)),
    ]
    for name, arg in calls:
        said = await refused_or_failed(
            client.execute_activity(
                name,
                arg,
                id=f"act-{uuid.uuid4().hex[:8]}",
                task_queue=task_queue,
                start_to_close_timeout=timedelta(seconds=30),
            )
        )
        assert DEPLOYMENT_ONLY in said, (name, said)


async def test_a_workflow_served_on_another_queue_cant_run_the_workers_tools(
    client: Client, task_queue: str, workspace: Path, tmp_path: Path
) -> None:
    """Any workflow may schedule an activity on any queue: one the attacker serves asks
    the worker's queue for `run_tool` with a made-up approval id."""
    marker = tmp_path / "ran"
    theirs = f"mallory-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=theirs, workflows=[Mallory]):
        said = await refused_or_failed(
            client.execute_workflow(
                Mallory.run,
                args=[touch(marker, workspace), task_queue],
                id=theirs,
                task_queue=theirs,
                result_type=ToolResult,
            )
        )
    assert DEPLOYMENT_ONLY in said and "Mallory on task queue" in said
    assert not marker.exists()


async def test_a_workflow_of_the_deployment_runs_only_what_its_gate_approved(
    client: Client, workspace: Path, tmp_path: Path
) -> None:
    """Even trusted code doesn't get a flagged call run by naming an approval id: the
    worker asks the run whether it settled that approval for exactly this action."""
    from tests.usertools.mallory import SkipsTheGate
    from worker import build_worker

    marker = tmp_path / "ran"
    queue = f"own-{uuid.uuid4().hex[:8]}"
    listed = ToolAction(tool="run_command", args={"argv": ["ls"]})
    async with build_worker(client, queue, workflows=[Mallory, SkipsTheGate]):
        # An approval id the run never had.
        said = await refused_or_failed(
            client.execute_workflow(
                Mallory.run,
                args=[touch(marker, workspace), queue],
                id=f"skip-{uuid.uuid4().hex[:8]}",
                task_queue=queue,
                result_type=ToolResult,
            )
        )
        assert "does not say which approvals it settled" in said, said
        # A real approval, of another command.
        handle = await client.start_workflow(
            SkipsTheGate.run,
            args=[listed, touch(marker, workspace).action, str(workspace)],
            id=f"skip-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            result_type=ToolResult,
        )
        [record] = await wait_pending(handle)
        await Reviews(client).decide(ApproveDecision(approval_id=record.id, reviewer="bob"))
        said = await refused_or_failed(handle.result())
        assert f"approval {record.id} approved another action than this one" in said, said
    assert not marker.exists()


async def test_a_continue_as_new_from_another_queue_carries_nothing(
    keys: Path, client: Client, task_queue: str, workspace: Path, tmp_path: Path
) -> None:
    """A carry is believed in a run started by a continue-as-new; the attacker's own
    workflow continues as new as the agent, on the worker's queue, with a carry holding an
    approved command and a requester 'verified' as bob."""
    marker = tmp_path / "ran"
    now = datetime.now(UTC)
    action = ToolAction(tool="run_command", args={"argv": ["touch", str(marker)]})
    approved = ApprovalRecord(
        id="apr_0123456789abcdef",
        session_id="x",
        action_json=action,
        action_digest=action.digest(),
        status=ApprovalStatus.APPROVED,
        reviewer="alice",
        created_at=now,
        expires_at=now + timedelta(hours=1),
        context=ApprovalContext(original_request="tidy up"),
        preview=ToolPreview(summary="harmless"),
    )
    call = ToolCall(id="c1", name="run_command", arguments=json.dumps(action.args))
    carry = AgentCarry(
        messages=[],
        step=1,
        turn=TurnState(step=1, calls=[CallState(call=call, approval_id=approved.id)]),
        gate=GateState(pending=[approved]),
        started_at=now,
        requester=StartCheck(requested_by="bob", verified=True),
    )
    run = RunInput(
        task="tidy up",
        workspace=str(workspace),
        model=ModelSettings(provider="scripted", script=[]),
        carry=carry,
    )
    theirs = f"mallory-{uuid.uuid4().hex[:8]}"
    workflow_id = f"forged-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=theirs, workflows=[MalloryContinues]):
        await client.start_workflow(
            MalloryContinues.run, args=[run, task_queue], id=workflow_id, task_queue=theirs
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(client.get_workflow_handle(workflow_id).result(), 60)
    assert getattr(failure.value.cause, "type", None) == "ForgedCarry", failure.value.cause
    assert not marker.exists()


# --- a decision seen on Redis can't be squatted -----------------------------------------------


async def test_a_copy_of_a_signed_decision_cant_take_its_place(
    keys: Path, client: Client, task_queue: str, workspace: Path
) -> None:
    """Everyone on Redis sees alice's signed rejection (its decision_id and every field)
    before the bridge forwards it. An attacker sends it first without the signature, as
    a signal and as the `decide` update the library would send: refused. alice's own,
    sent after, must still apply: the run must not take the refused copy for it."""
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    message = signed_message(
        "reject",
        record.id,
        record.action_digest,
        reason="keep them",
        signer=("alice", decode_key(ALICE_KEY)),
    )
    fields = {k: v for k, v in message.items() if k != "correlation_id"}
    unsigned = {k: v for k, v in fields.items() if k not in ("issuer", "issued_at", "signature")}
    await handle.signal(contract.SIGNAL_REJECT, unsigned)
    # The update under the very id the library will use for alice's (it names her payload).
    decision = RejectDecision.model_validate(fields)
    squatted = await handle.execute_update(
        contract.UPDATE_DECIDE,
        {**unsigned, "kind": "reject"},
        id=_update_id(decision, fields),
        result_type=Receipt,
    )
    assert squatted.entry.outcome == "refused" and "must be signed" in (
        squatted.entry.refusal or ""
    )
    assert squatted.code is RefusalCode.UNAUTHENTICATED  # who signed comes before what they may do
    outcome = await Reviews(client).forward(decision, fields, handle.id)
    assert outcome.entry is not None and outcome.entry.outcome == "applied", outcome.entry
    [after] = [r for r in await approvals(handle) if r.id == record.id]
    assert after.status is ApprovalStatus.REJECTED and after.reviewer == "alice"
    # The update copy was the signal copy again (the same payload): logged once.
    assert [(e.outcome, e.issuer) for e in after.decisions] == [
        ("refused", None),
        ("applied", "alice"),
    ]
    await handle.result()


# --- a workspace under the API's root stays under it --------------------------------------------


async def test_a_workspace_the_api_starts_stays_under_its_root_whatever_links_lie_there(
    env: WorkflowEnvironment,
    client: Client,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POST /runs checks the workspace's name; the folders under the root are written by
    whoever controls a workspace (a cloned repository, an approved `ln -s`). A link there
    to a folder outside, named as the workspace, would let `read_file` (no approval) read
    it. The run is started (the API can't see the files), and no tool reaches outside."""
    from tests.review_api import ServedApi, worker_env, write_reviewers

    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    for name, value in worker_env(reviewers).items():
        monkeypatch.setenv(name, value)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the worker's private file")
    root = tmp_path / "root"
    (root / "team").mkdir(parents=True)
    (root / "team" / "link").symlink_to(outside)
    (root / "team" / "real").mkdir()
    (root / "team" / "real" / "up").symlink_to(outside)
    script = [turn(("read_file", {"path": "secret.txt"}))]
    async with ServedApi(client, reviewers, task_queue=task_queue, workspace_root=str(root)) as api:
        async with api.http(tokens["bob"]) as bob:
            for workspace in ("team/link", "team/real/up"):
                answer = await bob.post(
                    "/runs",
                    json={
                        "task": "read it",
                        "workspace": workspace,
                        "script": [t.model_dump(mode="json") for t in script],
                    },
                )
                assert answer.status_code == 201, answer.text
                result = await asyncio.wait_for(
                    client.get_workflow_handle(answer.json()["id"], result_type=RunResult).result(),
                    60,
                )
                [ran] = result.tool_runs
                assert not ran.result.ok, ran
                assert "links below the folder of workspaces are not followed" in (
                    ran.result.error or ""
                )
                assert "private" not in result.model_dump_json()


def test_a_worker_with_a_workspace_root_opens_only_folders_below_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's own HITL_WORKSPACE_ROOT: a run signed by a reviewer's own key names its
    workspace freely, and still gets no folder outside the root, nor one through a link."""
    from hitl.tools import ToolContext, ToolError

    root = tmp_path / "root"
    (root / "team" / "ws").mkdir(parents=True)
    (root / "team" / "out").symlink_to(tmp_path)
    monkeypatch.setenv("HITL_WORKSPACE_ROOT", str(root))
    opened = ToolContext(workspace_path=str(root / "team" / "ws")).workspace
    assert opened.path == root.resolve() / "team" / "ws"
    for workspace in ("/", str(root), str(tmp_path), f"{root}/team/../..", f"{root}/team/out"):
        with pytest.raises(ToolError, match="under"):
            ToolContext(workspace_path=workspace).workspace  # noqa: B018
    # The run's own root (the API's) gives way to the worker's.
    assert ToolContext(
        workspace_path=str(root / "team" / "ws"), workspace_root="/elsewhere"
    ).workspace.path == (root.resolve() / "team" / "ws")


# --- what a run's input still says ---------------------------------------------------------


async def test_a_run_asking_an_absurd_approval_timeout_gets_the_workers(
    client: Client, task_queue: str, workspace: Path
) -> None:
    """A run may only shorten the timeout; one that asks for 1e300 s (valid for the
    input's `gt=0`) must neither lengthen it nor fail the run's workflow task."""
    handle = await start_run(
        client,
        task_queue,
        workspace,
        approval_timeout_seconds=1e300,
        tool_approval_timeouts={"delete_files": 1e308},
    )
    [record] = await wait_pending(handle)
    assert record.expires_at - record.created_at == timedelta(minutes=30)
    assert any("the worker's 30 min for delete_files applies" in w for w in record.preview.warnings)
    await handle.terminate("done")


# --- what a reviewer's own key may grant ---------------------------------------------------


NINA_KEY = new_key()


@pytest.fixture
def narrow(keys: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nina: run_command only, up to risk 40, with her own key."""
    add_reviewer(keys, "nina", tools=["run_command"], max_risk=40)
    monkeypatch.setenv(
        "HITL_DECISION_KEYS", f"api:{API_KEY},alice:{ALICE_KEY},bob:{BOB_KEY},nina:{NINA_KEY}"
    )
    return keys


async def test_a_narrow_reviewers_own_key_grants_no_standing_approval_above_her_limit(
    narrow: Path, client: Client, task_queue: str, workspace: Path
) -> None:
    script = [turn(("run_command", {"argv": ["ls", "-la"]}))]
    handle = await start_run(client, task_queue, workspace, script=script)
    [record] = await wait_pending(handle)
    assert record.risk == 30
    nina = Reviews(client, signer=("nina", decode_key(NINA_KEY)))
    wide = await nina.decide(
        ApproveDecision(approval_id=record.id, reviewer="nina", scope="tool", max_risk=100)
    )
    assert wide.entry is not None and "may approve up to risk 40, not a standing 100" in (
        wide.entry.refusal or ""
    )
    # Granted without a bound, the standing approval goes as far as the call she saw.
    granted = await nina.decide(
        ApproveDecision(approval_id=record.id, reviewer="nina", scope="tool")
    )
    assert granted.applied
    result = await handle.result()
    assert result.approvals[0].reviewer == "nina"


async def test_the_workers_policy_of_no_standing_approvals_holds_without_a_reviewer_list(
    client: Client,
    task_queue: str,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`[policy] standing = false` is the worker's policy, whoever may decide: a reviewers
    file with a policy and no reviewers still turns standing approvals off."""
    rules = tmp_path / "reviewers.toml"
    rules.write_text("[policy]\nstanding = false\n")
    monkeypatch.setenv("HITL_REVIEWERS", str(rules))
    script = [turn(("run_command", {"argv": ["ls", "-la"]}))]
    handle = await start_run(client, task_queue, workspace, script=script)
    [record] = await wait_pending(handle)
    grant = await Reviews(client).decide(
        ApproveDecision(approval_id=record.id, reviewer="bob", scope="tool", max_risk=30)
    )
    assert grant.entry is not None and "standing approvals are turned off" in (
        grant.entry.refusal or ""
    )
    await handle.terminate("done")


async def test_one_reviewer_counts_once_toward_a_quorum_whoever_signs_for_them(
    keys: Path, client: Client, task_queue: str, workspace: Path
) -> None:
    """bob approves through the API (signed as api) and again with his own key."""
    with keys.open("a") as file:
        file.write("\n[[quorum]]\nmin_risk = 0\napprovals = 2\n")
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    assert record.quorum == 2
    api = Reviews(client, signer=("api", decode_key(API_KEY)))
    own = Reviews(client, signer=("bob", decode_key(BOB_KEY)))
    first = await api.decide(ApproveDecision(approval_id=record.id, reviewer="bob"))
    assert first.applied and first.entry is not None and first.entry.issuer == "api"
    second = await own.decide(ApproveDecision(approval_id=record.id, reviewer="bob"))
    assert second.entry is not None and "has already approved this action" in (
        second.entry.refusal or ""
    )
    [still] = await wait_pending(handle)
    assert len(still.votes) == 1
    await handle.terminate("done")


# --- reviewers read only what they may read ---------------------------------------------------


async def test_the_run_listing_doesnt_title_a_run_with_an_approval_the_reviewer_may_not_read(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow of your own with no title of its own is listed under its first pending
    approval (`tool: summary`): carol, who may decide only write_file, must not read a
    `pay` approval's summary there."""
    from hitl.plugin import HitlPlugin
    from tests.review_api import ServedApi, write_reviewers
    from tests.usertools.carried import Carried

    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    queue = f"tq-untitled-{uuid.uuid4().hex[:8]}"
    plugin = HitlPlugin()
    async with Worker(client, task_queue=queue, workflows=[Carried], plugins=[plugin]):
        handle = await client.start_workflow(
            Carried.run, None, id=f"untitled-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        await wait_pending(handle)
        async with ServedApi(client, reviewers) as api:
            for name, shown in (("bob", "pay: pay"), ("carol", "")):
                async with api.http(tokens[name]) as http:
                    for _ in range(200):
                        runs = (await http.get("/runs", params={"limit": 20})).json()
                        mine = [run for run in runs if run["id"] == handle.id]
                        if mine and mine[0]["pending"]:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError(f"{name} never saw the run's pending approval")
                    assert mine[0]["task"] == shown, (name, mine)
        await handle.terminate("done")


async def test_a_reviewer_cant_start_a_run_under_the_id_of_someone_elses_finished_run(
    client: Client, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GET /runs/{id}` gathers every run under a workflow id: carol's run started under
    the id of bob's finished one would join bob's audit."""
    from tests.review_api import ServedApi, worker_env, write_reviewers

    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)
    for name, value in worker_env(reviewers).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "root" / "ws").mkdir(parents=True)
    body = {"task": "say hi", "workspace": "ws", "id": f"taken-{uuid.uuid4().hex[:8]}"}
    async with ServedApi(
        client, reviewers, task_queue=task_queue, workspace_root=str(tmp_path / "root")
    ) as api:
        async with api.http(tokens["bob"]) as bob, api.http(tokens["carol"]) as carol:
            started = await bob.post("/runs", json={**body, "model": "scripted"})
            assert started.status_code == 201, started.text
            await asyncio.wait_for(client.get_workflow_handle(body["id"]).result(), 30)
            again = await carol.post("/runs", json={**body, "model": "scripted"})
            assert again.status_code == 409 and "has run" in again.json()["detail"], again.text


# --- a standing approval covers the program the reviewer saw ---------------------------------


async def test_a_standing_grant_on_ls_doesnt_cover_a_workspace_script_called_ls(
    client: Client, task_queue: str, workspace: Path, tmp_path: Path
) -> None:
    """The workspace is untrusted: a script named `ls` in it, run as `./ls -la`, is another
    program than the `ls` a reviewer granted "run_command up to risk 100" on."""
    marker = tmp_path / "ran"
    script_file = workspace / "ls"
    script_file.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script_file.chmod(0o755)
    script = [
        turn(("run_command", {"argv": ["ls", "-la"]})),
        turn(("run_command", {"argv": ["./ls", "-la"]})),
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    [first] = await wait_pending(handle)
    granted = await Reviews(client).decide(
        ApproveDecision(approval_id=first.id, reviewer="bob", scope="tool", max_risk=100)
    )
    assert granted.applied
    for _ in range(200):
        records = await approvals(handle)
        if len(records) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the second call never asked for approval: {records}")
    second = records[1]
    assert second.action_json.args["argv"] == ["./ls", "-la"]
    assert second.status is ApprovalStatus.PENDING and second.standing is None, second
    assert not marker.exists()
    await handle.terminate("done")


async def test_a_standing_grant_on_git_status_doesnt_cover_another_git_command(
    client: Client, task_queue: str, workspace: Path
) -> None:
    """`git status` and `git init sub` have no options to tell them apart and score the same
    (95): a program off the read-only list is covered only as the exact command."""
    script = [
        turn(("run_command", {"argv": ["git", "status"]})),
        turn(("run_command", {"argv": ["git", "init", "sub"]})),
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    [first] = await wait_pending(handle)
    granted = await Reviews(client).decide(
        ApproveDecision(approval_id=first.id, reviewer="bob", scope="tool", max_risk=100)
    )
    assert granted.applied
    for _ in range(200):
        records = await approvals(handle)
        if len(records) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the second call never asked for approval: {records}")
    second = records[1]
    assert second.status is ApprovalStatus.PENDING and second.standing is None, second
    assert not (workspace / "sub").exists()
    await handle.terminate("done")


async def test_a_runs_own_continue_as_new_is_believed_and_replays(
    client: Client, task_queue: str, workspace: Path
) -> None:
    """The check on a carry lets the run's own continuation through (the previous run was
    this workflow on this queue), and both histories replay with its marker."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from hitl.models import RunLimits
    from hitl.plugin import HitlPlugin
    from tests.helpers import decision
    from workflows import ALL_WORKFLOWS

    handle = await start_run(
        client, task_queue, workspace, limits=RunLimits(continue_as_new_events=200)
    )
    [record] = await wait_pending(handle)
    first_run = (await handle.describe()).run_id
    latest = client.get_workflow_handle(handle.id, result_type=RunResult)
    for batch in range(40):  # junk decisions grow the history until the run continues
        await asyncio.gather(
            *(
                handle.signal(contract.SIGNAL_APPROVE, decision(f"apr_junk{batch}_{i}"))
                for i in range(10)
            )
        )
        await asyncio.sleep(0.1)
        if (await latest.describe()).run_id != first_run:
            break
    else:
        raise AssertionError("400 junk decisions never made the run continue as new")
    [carried] = await wait_pending(latest)
    assert carried.id == record.id
    await latest.signal(contract.SIGNAL_APPROVE, decision(record.id, "bob"))
    result = await asyncio.wait_for(latest.result(), 30)
    assert (
        first_run in result.previous_runs and result.approvals[-1].status is ApprovalStatus.APPROVED
    )
    replayer = Replayer(
        workflows=ALL_WORKFLOWS,
        data_converter=pydantic_data_converter,
        plugins=[HitlPlugin()],
    )
    for run_id in [*result.previous_runs, (await latest.describe()).run_id]:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        await replayer.replay_workflow(history)
