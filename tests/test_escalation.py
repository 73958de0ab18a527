"""Escalation on the time-skipping server: a 30-minute approval with stages, in seconds.

The worker's reviewers file says: remind at half time, escalate after 20 minutes to the
on-call group (whose member may not normally decide the tool), then reject at the
deadline (or hold once for a bounded extension). The run's input may only make it stricter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.cli.runs import cmd_audit
from hitl.decisions import RefusalCode
from hitl.devserver import temporal_binary
from hitl.models import ApprovalStatus, EscalationPolicy, NotifyEvent
from hitl.reviewers import ReviewerConfigError, WorkingHours, load_config
from hitl.reviews import Audit, Reviews
from hitl.terminal import format_approval
from hitl.visibility import ensure_search_attributes
from tests.helpers import approvals, assert_replays, decision, wait_decisions, wait_pending
from tests.helpers import start_run as start
from tests.review_api import ServedApi, worker_env, write_reviewers
from worker import build_worker

REVIEWERS = """
[reviewers.alice]
token_sha256 = "aa"
tools = ["*"]

[reviewers.olga]
token_sha256 = "bb"
tools = ["read_file"]
groups = ["oncall"]

[[escalation]]
remind_at = [0.5]
escalate_after = 1200
to = "oncall"
at_deadline = "{at_deadline}"
{extend}
"""

EVENTS: list[tuple[str, timedelta, list[str]]] = []


@activity.defn(name=contract.ACTIVITY_NOTIFY_EVENT)
async def capture(event: NotifyEvent) -> None:
    """A channel that notes each event, when (in the approval's own time), and who was asked."""
    EVENTS.append((event.event, event.at - event.approval.created_at, event.approval.escalated_to))


@pytest.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_binary("temporal-test-server"),
        test_server_startup_timeout=timedelta(seconds=60),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(environment.client)
    yield environment
    await environment.shutdown()


def reviewers_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at_deadline: str = "reject"
) -> None:
    extend = "extend_by = 600" if at_deadline == "extend" else ""
    path = tmp_path / "reviewers.toml"
    path.write_text(REVIEWERS.format(at_deadline=at_deadline, extend=extend))
    monkeypatch.setenv("HITL_REVIEWERS", str(path))
    monkeypatch.delenv("HITL_DECISION_KEYS", raising=False)


async def send(handle: WorkflowHandle, approval_id: str, reviewer: str) -> None:
    await handle.signal(contract.SIGNAL_APPROVE, decision(approval_id, reviewer))


async def test_escalated_reviewer_decides_only_after_escalation(
    skipping: WorkflowEnvironment, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reviewers_file(tmp_path, monkeypatch)
    EVENTS.clear()
    client = skipping.client
    async with build_worker(client, "tq-esc-1", activities=[capture]):
        handle = await start(client, "tq-esc-1", workspace)
        with skipping.auto_time_skipping_disabled():
            [record] = await wait_pending(handle)
            assert record.escalation is not None and record.escalation.to == ["olga"]
            # Before the escalation, olga (read_file only) may not decide the tool.
            await send(handle, record.id, "olga")
            [early] = await wait_decisions(handle, record.id, 1)
        assert early.outcome == "refused" and early.code == RefusalCode.NOT_ALLOWED.value
        assert "may not decide" in (early.refusal or "")

        await skipping.sleep(timedelta(minutes=21))
        with skipping.auto_time_skipping_disabled():
            [now] = [r for r in await approvals(handle) if r.id == record.id]
            assert now.status is ApprovalStatus.PENDING
            [step] = now.escalations
            assert step.kind == "escalated" and step.to == ["olga"]
            assert (
                timedelta(minutes=20) <= step.at - now.created_at < timedelta(minutes=20, seconds=1)
            )
            await send(handle, record.id, "olga")
            log = await wait_decisions(handle, record.id, 2)
        assert log[1].outcome == "applied", log[1]
        result = await handle.result()

    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "olga"
    assert not done.expired
    names = [name for name, _, _ in EVENTS]
    assert names == ["pending", "reminder", "escalated", "decided"], EVENTS
    assert timedelta(minutes=15) <= EVENTS[1][1] < timedelta(minutes=16)
    assert EVENTS[2][1] >= timedelta(minutes=20) and EVENTS[2][2] == ["olga"]
    await assert_replays(handle)


async def test_deadline_expires_recorded_and_shown_as_expired(
    skipping: WorkflowEnvironment,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reviewers_file(tmp_path, monkeypatch)
    client = skipping.client
    async with build_worker(client, "tq-esc-2"):
        handle = await start(client, "tq-esc-2", workspace)
        with skipping.auto_time_skipping_disabled():
            await wait_pending(handle)
        await skipping.sleep(timedelta(minutes=31))
        result = await handle.result()
    [done] = result.approvals
    assert done.status is ApprovalStatus.REJECTED  # the contract's status
    assert done.expired and done.reviewer == "system:timeout"
    assert [s.kind for s in done.escalations] == ["escalated"]
    assert done.model_dump(mode="json")["expired"] is True  # `hitl show --json`
    assert "status EXPIRED" in format_approval(done)  # `hitl show`
    assert "Escalation: to olga after 20 min; at the deadline: reject" in format_approval(done)

    # The test server lists no workflows: the audit is given the run's own records.
    async def audit(self: Reviews, workflow_id: str) -> Audit:
        return Audit(workflow_id, "completed", [], result.approvals, [])

    monkeypatch.setattr(Reviews, "audit", audit)
    code = await cmd_audit(client, argparse.Namespace(run=handle.id, json=False))
    shown = capsys.readouterr().out
    assert code == 0 and f"{done.id}" in shown and "expired" in shown
    assert "rejected by" not in shown
    await cmd_audit(client, argparse.Namespace(run=handle.id, json=True))
    [audited] = json.loads(capsys.readouterr().out)["approvals"]
    assert audited["expired"] is True and audited["status"] == "rejected"


async def test_extend_holds_once_for_a_bounded_time_then_expires(
    skipping: WorkflowEnvironment, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reviewers_file(tmp_path, monkeypatch, at_deadline="extend")
    EVENTS.clear()
    client = skipping.client
    async with build_worker(client, "tq-esc-3", activities=[capture]):
        handle = await start(client, "tq-esc-3", workspace)
        with skipping.auto_time_skipping_disabled():
            [record] = await wait_pending(handle)
        await skipping.sleep(timedelta(minutes=35))
        with skipping.auto_time_skipping_disabled():
            [held] = [r for r in await approvals(handle) if r.id == record.id]
        assert held.status is ApprovalStatus.PENDING
        held_for = held.expires_at - held.created_at
        assert timedelta(minutes=40) <= held_for < timedelta(minutes=40, seconds=1)
        await skipping.sleep(timedelta(minutes=6))
        result = await handle.result()
    [done] = result.approvals
    assert done.expired and done.status is ApprovalStatus.REJECTED
    assert [s.kind for s in done.escalations] == ["escalated", "extended"]
    assert done.reviewed_at is not None
    assert done.reviewed_at - done.created_at >= timedelta(minutes=40)
    names = [name for name, _, _ in EVENTS]
    assert names == ["pending", "reminder", "escalated", "extended", "timed_out"], EVENTS
    await assert_replays(handle)


async def test_a_run_asking_for_a_looser_policy_does_not_get_it(
    skipping: WorkflowEnvironment, workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reviewers_file(tmp_path, monkeypatch)  # the worker's: reject at the deadline
    client = skipping.client
    asked = EscalationPolicy(
        escalate_after_seconds=60,
        to=["mallory"],
        at_deadline="extend",
        extend_by_seconds=86_400,
    )
    async with build_worker(client, "tq-esc-4"):
        handle = await start(client, "tq-esc-4", workspace, escalation=asked)
        with skipping.auto_time_skipping_disabled():
            [record] = await wait_pending(handle)
        assert record.escalation is not None
        assert record.escalation.to == ["olga"]
        assert record.escalation.escalate_after_seconds == 1200
        assert record.escalation.at_deadline == "reject"
        assert any("worker's escalation policy applies" in w for w in record.preview.warnings)
        await skipping.sleep(timedelta(minutes=31))
        result = await handle.result()
    [done] = result.approvals
    assert done.expired
    assert [s.kind for s in done.escalations] == ["escalated"]  # no extension


def test_the_reviewers_file_escalation_rules_and_the_authorizer(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.toml"
    path.write_text(REVIEWERS.format(at_deadline="extend", extend="extend_by = 600"))
    config = load_config(path)
    rule = config.escalation_for("delete_files", 40, 1800)
    assert rule is not None and rule.to == ["olga"] and rule.escalate_after_seconds == 1200
    assert rule.at_deadline == "extend" and rule.extend_by_seconds == 600
    assert rule.remind_at == [0.5]
    # Olga may decide delete_files only once the approval was escalated to her.
    assert config.refusal("olga", "approve", "delete_files", 40, "") is not None
    assert config.refusal("olga", "approve", "delete_files", 40, "", escalated_to=["olga"]) is None
    assert config.refusal("mallory", "approve", "x", 40, "", escalated_to=["mallory"]) is not None
    for bad in (
        'at_deadline = "approve"',
        'at_deadline = "extend"\nextend_by = 999999',
        'to = "nobody"\nescalate_after = 60',
        "escalate_after = 60",
        "surprise = 1",
    ):
        path.write_text('[reviewers.a]\ntoken_sha256 = "x"\n[[escalation]]\n' + bad + "\n")
        with pytest.raises(ReviewerConfigError):
            load_config(path)


async def test_escalation_on_the_dev_server_with_short_times(
    client: Client,
    task_queue: str,
    workspace: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same stages in real time (escalation at 1 s of 6 s), and the run replays."""
    path = tmp_path / "reviewers.toml"
    text = REVIEWERS.format(at_deadline="reject", extend="").replace(
        "escalate_after = 1200", "escalate_after = 1"
    )
    path.write_text(text + "\n[policy]\napproval_timeout = 6\n")
    monkeypatch.setenv("HITL_REVIEWERS", str(path))
    monkeypatch.delenv("HITL_DECISION_KEYS", raising=False)
    async with build_worker(client, task_queue):
        handle = await start(client, task_queue, workspace)
        [record] = await wait_pending(handle)
        await send(handle, record.id, "olga")
        [early] = await wait_decisions(handle, record.id, 1)
        assert early.code == RefusalCode.NOT_ALLOWED.value
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not [r for r in await approvals(handle) if r.escalations]:
            assert loop.time() < deadline, "no escalation"
            await asyncio.sleep(0.05)
        await send(handle, record.id, "olga")
        result = await asyncio.wait_for(handle.result(), timeout=30)
    [done] = result.approvals
    assert done.status is ApprovalStatus.APPROVED and done.reviewer == "olga"
    assert [d.outcome for d in done.decisions] == ["refused", "applied"]
    await assert_replays(handle)


HOURS = WorkingHours(
    timezone="Europe/Berlin",
    days=frozenset(range(5)),
    opens=time(9),
    closes=time(17),
    holidays=frozenset({date(2026, 12, 25)}),
)
BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_working_hours_pause_the_clock_outside_hours_weekends_and_holidays() -> None:
    def until(start: datetime, working: float) -> datetime:
        # In UTC: an aware time plus a timedelta adds wall-clock time in its own zone.
        return start.astimezone(UTC) + timedelta(seconds=HOURS.wall_seconds(start, working))

    # Within the day: time runs as it passes.
    assert until(berlin(2026, 12, 1, 10, 0), 1800) == berlin(2026, 12, 1, 10, 30)
    # 16:45 Friday + 30 min: 15 min on Friday, 15 min on Monday morning.
    assert until(berlin(2026, 11, 27, 16, 45), 1800) == berlin(2026, 11, 30, 9, 15)
    # Asked at night: the clock starts when the day does.
    assert until(berlin(2026, 12, 1, 22, 0), 60) == berlin(2026, 12, 2, 9, 1)
    # Thursday 24 December 16:50 + 20 min: Christmas (a holiday) is skipped.
    assert until(berlin(2026, 12, 24, 16, 50), 1200) == berlin(2026, 12, 28, 9, 10)
    # Across the change from summer time (25 October 2026): working time, not wall time.
    assert until(berlin(2026, 10, 23, 16, 0), 2 * 3600) == berlin(2026, 10, 26, 10, 0)
    assert HOURS.wall_seconds(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), 0) == 0
    never = WorkingHours("UTC", frozenset({0}), time(9), time(17), frozenset())
    assert never.wall_seconds(datetime(2026, 12, 1, tzinfo=UTC), 10**9) == 10**9  # bounded


def test_a_working_hours_rule_stretches_its_times_over_the_hours(tmp_path: Path) -> None:
    path = tmp_path / "reviewers.toml"
    path.write_text(
        REVIEWERS.format(at_deadline="reject", extend="working_hours = true")
        + '\n[working_hours]\ntimezone = "Europe/Berlin"\ndays = ["mon", "tue", "wed", "thu",'
        ' "fri"]\nhours = "09:00-17:00"\nholidays = [2026-12-25]\n'
    )
    config = load_config(path)
    friday = berlin(2026, 11, 27, 16, 45)
    found, timeout = config.timed_escalation("delete_files", 40, 1800, friday)
    assert found is not None and found.working_hours
    weekend = (berlin(2026, 11, 30, 9, 0) - berlin(2026, 11, 27, 17, 0)).total_seconds()
    assert timeout == 1800 + weekend
    # Escalation after 20 working minutes: Monday 09:05.
    assert found.escalate_after_seconds == 1200 + weekend
    # The reminder at half the working time: Friday 17:00 (15 min of 30), as a fraction.
    assert found.remind_at == [pytest.approx(900 / timeout)]
    # Without working hours (the rule doesn't ask), the times are as written.
    path.write_text(REVIEWERS.format(at_deadline="reject", extend=""))
    plain, same = load_config(path).timed_escalation("delete_files", 40, 1800, friday)
    assert same == 1800 and plain is not None and plain.escalate_after_seconds == 1200
    for bad in ('timezone = "Mars/Olympus"', 'hours = "17:00-09:00"', 'days = ["someday"]'):
        path.write_text(f"[working_hours]\n{bad}\n")
        with pytest.raises(ReviewerConfigError):
            load_config(path)
    path.write_text("[reviewers.a]\ntoken_sha256 = 'x'\n[[escalation]]\nworking_hours = true\n")
    with pytest.raises(ReviewerConfigError, match="needs a \\[working_hours\\]"):
        load_config(path)


async def test_an_escalated_reviewer_decides_through_the_review_api(
    client: Client, task_queue: str, workspace: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """carol decides only write_file: a delete_files approval is none of hers until it is
    escalated to her; then the API shows it to her and takes her signed decision."""
    path = tmp_path / "reviewers.toml"
    tokens = write_reviewers(path)
    with path.open("a") as file:
        file.write('\n[[escalation]]\nescalate_after = 2\nto = ["carol"]\n')
    for name, value in worker_env(path).items():
        monkeypatch.setenv(name, value)
    async with build_worker(client, task_queue), ServedApi(client, path) as api:
        handle = await start(client, task_queue, workspace)
        [record] = await wait_pending(handle)
        async with api.http(tokens["carol"]) as carol:
            early = await carol.post(f"/approvals/{record.id}/approve", json={})
            assert early.status_code == 404, early.text  # not hers to see, yet
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not [r for r in await approvals(handle) if r.escalations]:
                assert loop.time() < deadline, "no escalation"
                await asyncio.sleep(0.05)
            shown = await carol.get(f"/approvals/{record.id}")
            assert shown.status_code == 200 and shown.json()["escalations"][0]["to"] == ["carol"]
            done = await carol.post(f"/approvals/{record.id}/approve", json={})
            assert done.status_code == 200, done.text
            assert done.json()["message"] == "approved by carol"
        result = await asyncio.wait_for(handle.result(), timeout=30)
    [approved] = result.approvals
    assert approved.status is ApprovalStatus.APPROVED and approved.reviewer == "carol"
