"""Who may decide: signed decisions, reviewer rules, quorum, standing approvals, updates.

The worker runs in this process, so the keys and the reviewers file are set in its
environment the way an operator sets them on a worker.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.models import (
    ApprovalStatus,
    ApproveDecision,
    ModifyDecision,
    RejectDecision,
    RevokeDecision,
)
from hitl.reviewers import add_reviewer, load_config, new_key, sign, verify
from hitl.reviews import Reviews
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import (
    approvals,
    decision,
    start_run,
    temporal_cli,
    turn,
    wait_decisions,
    wait_pending,
)

pytestmark = pytest.mark.usefixtures("worker")

API_KEY = new_key()
ALICE_KEY = new_key()


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A worker that accepts only decisions signed by the API or by alice's own key."""
    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "alice", max_risk=60)
    add_reviewer(reviewers, "bob")
    add_reviewer(reviewers, "carol", tools=["write_file"])
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    monkeypatch.setenv("HITL_DECISION_KEYS", f"api:{API_KEY},alice:{ALICE_KEY}")
    return reviewers


def api(client: Client) -> Reviews:
    from hitl.reviewers import decode_key

    return Reviews(client, signer=("api", decode_key(API_KEY)))


def test_a_signature_binds_every_field_and_expires() -> None:
    from datetime import UTC, datetime, timedelta

    from hitl.reviewers import decode_key

    now = datetime.now(UTC)
    body = {"approval_id": "apr_1", "kind": "approve", "reviewer": "bob", "action_digest": "d"}
    good = sign(body, "api", decode_key(API_KEY), now)
    keys = {"api": decode_key(API_KEY)}
    assert verify(good, keys, now) is None
    for field, value in [("reviewer", "mallory"), ("approval_id", "apr_2"), ("kind", "reject")]:
        assert "forged or altered" in (verify({**good, field: value}, keys, now) or "")
    assert "valid for 15 min" in (verify(good, keys, now + timedelta(minutes=16)) or "")
    assert "not an issuer" in (verify(sign(body, "eve", b"x" * 32, now), keys, now) or "")


async def test_an_unsigned_signal_is_refused_when_decisions_must_be_signed(
    signed: Path, env: WorkflowEnvironment, client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    address = env.client.service_client.config.target_host
    payload = json.dumps({"approval_id": record.id, "reviewer": "bob"})
    await temporal_cli(
        "workflow", "signal", "--address", address, "--workflow-id", handle.id,
        "--name", "approve", "--input", payload,
    )  # fmt: skip
    forged = sign(
        {"approval_id": record.id, "kind": "approve", "reviewer": "bob",
         "action_digest": record.action_digest},
        "api",
        b"not the api key, guessed" * 2,
    )  # fmt: skip
    await handle.signal(contract.SIGNAL_APPROVE, forged)
    from hitl.reviewers import decode_key

    as_bob_with_alices_key = Reviews(client, signer=("alice", decode_key(ALICE_KEY)))
    outcome = await as_bob_with_alices_key.decide(
        ApproveDecision(approval_id=record.id, reviewer="bob"), workflow_id=handle.id
    )
    assert outcome.entry is not None and "alice's key signs only alice's" in (
        outcome.entry.refusal or ""
    )
    log = await wait_decisions(handle, record.id, 3)
    assert "an unsigned signal is refused" in (log[0].refusal or "")
    assert "forged or altered" in (log[1].refusal or "")
    assert (await approvals(handle))[0].status is ApprovalStatus.PENDING
    # The API signs for the reviewer it authenticated; that one applies.
    applied = await api(client).decide(
        ApproveDecision(approval_id=record.id, reviewer="bob"), workflow_id=handle.id
    )
    assert applied.applied and applied.entry is not None and applied.entry.issuer == "api"
    await handle.result()
    assert files_in(workspace) == sorted(NEW_LOGS + OTHER)


async def test_reviewer_rules_hold_on_every_path(
    signed: Path, client: Client, task_queue: str, tmp_path: Path
) -> None:
    handle = await start_run(client, task_queue, make_logs(tmp_path / "ws"), requested_by="bob")
    [record] = await wait_pending(handle)
    assert record.context.requested_by == "bob" and record.risk == 42
    reviews = api(client)

    async def decide(reviewer: str, **fields: object) -> str:
        made = ApproveDecision(approval_id=record.id, reviewer=reviewer, **fields)
        outcome = await reviews.decide(made, workflow_id=handle.id)
        assert outcome.entry is not None
        return outcome.entry.refusal or "applied"

    assert "started this run and may not approve" in await decide("bob")
    assert "may not decide delete_files calls" in await decide("carol")
    assert "not a reviewer" in await decide("mallory")
    assert "not a standing 90" in await decide("alice", scope="tool", max_risk=90)
    assert await decide("alice") == "applied"
    result = await handle.result()
    assert result.approvals[0].reviewer == "alice"


async def test_reviewer_rules_hold_for_a_signal_that_leaves_its_kind_to_its_name(
    monkeypatch: pytest.MonkeyPatch, client: Client, task_queue: str, tmp_path: Path
) -> None:
    """A plain `approve` signal need not say `kind`: the rules that depend on it (a risk
    limit, not approving one's own run) are checked as for any approval (they were
    skipped, and a reviewer limited to risk 30 approved a risk-42 call)."""
    reviewers = tmp_path / "reviewers.toml"
    add_reviewer(reviewers, "alice", max_risk=30)
    add_reviewer(reviewers, "bob")
    add_reviewer(reviewers, "dave")
    monkeypatch.setenv("HITL_REVIEWERS", str(reviewers))
    handle = await start_run(client, task_queue, make_logs(tmp_path / "ws"), requested_by="bob")
    [record] = await wait_pending(handle)
    assert record.risk == 42
    for reviewer in ("alice", "bob"):
        await handle.signal(
            contract.SIGNAL_APPROVE, {"approval_id": record.id, "reviewer": reviewer}
        )
    alice, bob = await wait_decisions(handle, record.id, 2)
    assert alice.outcome == "refused" and alice.code == "not_allowed", alice
    assert "alice may approve up to risk 30" in (alice.refusal or ""), alice.refusal
    assert bob.outcome == "refused" and "started this run" in (bob.refusal or ""), bob.refusal
    assert (await approvals(handle))[0].status is ApprovalStatus.PENDING
    await handle.signal(contract.SIGNAL_APPROVE, {"approval_id": record.id, "reviewer": "dave"})
    result = await handle.result()
    assert result.approvals[0].reviewer == "dave"


async def test_a_quorum_needs_distinct_approvers_and_one_rejection_rejects(
    signed: Path, client: Client, task_queue: str, tmp_path: Path
) -> None:
    with signed.open("a") as file:
        file.write("\n[[quorum]]\nmin_risk = 40\napprovals = 2\n")
    assert load_config(signed).quorum_for(42) == 2
    reviews = api(client)
    handle = await start_run(client, task_queue, make_logs(tmp_path / "a"))
    [record] = await wait_pending(handle)
    assert record.quorum == 2
    first = await reviews.decide(
        ApproveDecision(approval_id=record.id, reviewer="alice"), workflow_id=handle.id
    )
    assert first.entry is not None and first.entry.note == "1 of 2 approvals"
    [still] = await wait_pending(handle)
    assert still.status is ApprovalStatus.PENDING and len(still.votes) == 1
    again = await reviews.decide(
        ApproveDecision(approval_id=record.id, reviewer="alice"), workflow_id=handle.id
    )
    assert again.entry is not None and "already approved this action" in (again.entry.refusal or "")
    second = await reviews.decide(
        ApproveDecision(approval_id=record.id, reviewer="bob"), workflow_id=handle.id
    )
    assert second.applied and second.entry is not None and second.entry.note == "2 of 2 approvals"
    result = await handle.result()
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and [v.reviewer for v in done.votes] == [
        "alice",
        "bob",
    ]
    assert done.reviewer == "alice, bob"

    # A modification starts the count again for the new arguments; one rejection rejects.
    handle = await start_run(client, task_queue, make_logs(tmp_path / "b"))
    [record] = await wait_pending(handle)
    await reviews.decide(
        ApproveDecision(approval_id=record.id, reviewer="alice"), workflow_id=handle.id
    )
    modified = await reviews.decide(
        ModifyDecision(approval_id=record.id, reviewer="bob", args={"paths": [OLD_LOGS[0]]}),
        workflow_id=handle.id,
    )
    assert modified.entry is not None and modified.entry.note == "1 of 2 approvals"
    [changed] = await wait_pending(handle)
    assert [v.reviewer for v in changed.votes] == ["bob"]
    stale = await reviews.decide(
        ApproveDecision(
            approval_id=record.id, reviewer="alice", action_digest=record.action_digest
        ),
        workflow_id=handle.id,
    )
    assert stale.entry is not None and "look at it again" in (stale.entry.refusal or "")
    rejected = await reviews.decide(
        RejectDecision(approval_id=record.id, reviewer="alice", reason="no"),
        workflow_id=handle.id,
    )
    assert rejected.applied
    result = await handle.result()
    assert result.approvals[0].status is ApprovalStatus.REJECTED


async def test_a_standing_approval_approves_later_calls_until_revoked(
    client: Client, task_queue: str, workspace: Path
) -> None:
    pause = ("write_file", {"path": "notes.txt", "content": "a pause for the reviewer\n"})
    script = [
        turn(("delete_files", {"paths": [OLD_LOGS[0]]})),
        turn(("delete_files", {"paths": [OLD_LOGS[1]]})),
        turn(pause),
        turn(("delete_files", {"paths": [OLD_LOGS[2]]})),
    ]
    handle = await start_run(client, task_queue, workspace, script=script)
    reviews = Reviews(client)
    [first] = await wait_pending(handle)
    granted = await reviews.decide(
        ApproveDecision(approval_id=first.id, reviewer="dana", scope="tool", max_risk=50),
        workflow_id=handle.id,
    )
    assert granted.applied and granted.entry is not None and granted.entry.scope == "tool"
    # The second deletion is approved by the standing approval, without asking; the run
    # then waits on the write, which the standing approval does not cover.
    [write] = await wait_pending(handle)
    assert write.action_json.tool == "write_file"
    second = (await approvals(handle))[1]
    assert second.status is ApprovalStatus.APPROVED and second.reviewer == "dana"
    assert second.standing == first.id and "standing approval" in (second.reason or "")
    assert second.decisions[0].kind.value == "standing"
    revoked = await reviews.decide(
        RevokeDecision(approval_id=first.id, reviewer="dana", reason="enough"),
        workflow_id=handle.id,
    )
    assert revoked.applied
    await handle.signal(contract.SIGNAL_APPROVE, decision(write.id, "dana"))
    # Revoked: the third deletion asks again.
    for _ in range(200):
        waiting = [r for r in await wait_pending(handle) if r.action_json.tool == "delete_files"]
        if waiting:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("after the revocation the third deletion never asked again")
    [third] = waiting
    assert third.action_json.args == {"paths": [OLD_LOGS[2]]}
    await handle.signal(contract.SIGNAL_REJECT, decision(third.id, "dana", reason="stop"))
    result = await handle.result()
    assert [r.status for r in result.approvals] == [ApprovalStatus.APPROVED] * 3 + [
        ApprovalStatus.REJECTED
    ]
    assert [e.kind.value for e in result.approvals[0].decisions] == ["approve", "revoke"]
    assert OLD_LOGS[2] in files_in(workspace) and OLD_LOGS[1] not in files_in(workspace)


async def test_an_update_answers_in_one_round_trip_and_keeps_junk_out_of_history(
    client: Client, task_queue: str, workspace: Path
) -> None:
    handle = await start_run(client, task_queue, workspace)
    [record] = await wait_pending(handle)
    for junk, code in [
        ("not an object", "malformed"),
        ({"kind": "approve", "approval_id": record.id}, "malformed"),
        ({"kind": "approve", "approval_id": "apr_nope", "reviewer": "x"}, "unknown_approval"),
        ({"kind": "shout", "approval_id": record.id, "reviewer": "x"}, "malformed"),
    ]:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(contract.UPDATE_DECIDE, junk)
        # The refusal's code rides as the error's type, for the reviewer's side.
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == code, refused.value.cause
    history = await handle.fetch_history()
    kinds = {EventType.Name(event.event_type) for event in history.events}
    assert not {"EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED"} & kinds, "nothing recorded"
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"apr_nope" not in raw and b"shout" not in raw
    outcome = await Reviews(client).decide(
        ApproveDecision(approval_id=record.id, reviewer="erin"), workflow_id=handle.id
    )
    assert outcome.applied and outcome.entry is not None and outcome.entry.reviewer == "erin"
    late = await Reviews(client).decide(
        RejectDecision(approval_id=record.id, reviewer="frank", reason="x"),
        workflow_id=handle.id,
    )
    assert late.entry is not None and "already approved by erin" in (late.entry.refusal or "")
    # The run's receipt: the entry's code, and the approval as the run saw it then.
    assert late.refusal_code == "already_decided"
    assert late.record is not None and late.record.reviewer == "erin"
    await handle.result()
