"""The review API under uvicorn on loopback, against the dev server and a real worker.

The worker runs in this process with the environment an operator gives a worker that
takes only the API's signed decisions (HITL_DECISION_KEYS, HITL_REVIEWERS), as in
tests/test_authz.py; the API authenticates reviewers by token from the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from hitl.models import RejectDecision
from hitl.reviewers import add_reviewer, decode_key
from hitl.reviews import CONFIRM_SECONDS, Reviews
from tests.conftest import NEW_LOGS, OLD_LOGS, OTHER, files_in, make_logs
from tests.helpers import (
    CLEANUP_TASK,
    start_run,
    temporal_cli,
    turn,
    wait_decisions,
    wait_pending,
)
from tests.review_api import API_KEY, ServedApi, wait_listed, worker_env, write_reviewers
from worker import build_worker

pytestmark = pytest.mark.usefixtures("worker")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reviewers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("reviewers") / "reviewers.toml"
    return path, write_reviewers(path)


@pytest.fixture(autouse=True)
def signed_worker(monkeypatch: pytest.MonkeyPatch, reviewers: tuple[Path, dict[str, str]]) -> None:
    for name, value in worker_env(reviewers[0]).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
async def api(
    env: WorkflowEnvironment, reviewers: tuple[Path, dict[str, str]]
) -> AsyncIterator[ServedApi]:
    async with ServedApi(env.client, reviewers[0]) as served:
        yield served


@pytest.fixture
async def as_(
    api: ServedApi, reviewers: tuple[Path, dict[str, str]]
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """An HTTP client per reviewer, each sending that reviewer's token."""
    clients = {name: api.http(token) for name, token in reviewers[1].items()}
    yield clients
    for http in clients.values():
        await http.aclose()


def deletes(*paths: str) -> list:
    """One model turn that asks to delete each path in a call of its own (side by side)."""
    return [turn(*[("delete_files", {"paths": [path]}) for path in paths])]


async def test_listing_comes_in_pages_with_no_approval_twice(
    api: ServedApi, as_: dict[str, httpx.AsyncClient], client: Client, task_queue: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    three = await start_run(
        client, task_queue, make_logs(tmp_path / "a"), script=deletes(*OLD_LOGS)
    )
    singles = [
        await start_run(client, task_queue, make_logs(tmp_path / name), script=deletes(OLD_LOGS[0]))
        for name in ("b", "c")
    ]
    alice = as_["alice"]
    ours = {item["id"] for item in await wait_listed(alice, three.id, 3)}
    for handle in singles:
        ours |= {item["id"] for item in await wait_listed(alice, handle.id)}
    assert len(ours) == 5

    # A run is never split between pages: its three approvals come whole in a page of 2.
    page = (await alice.get("/approvals", params={"run": three.id, "limit": 2})).json()
    assert len(page["items"]) == 3 and page["next_page_token"] is None
    assert {item["votes"] for item in page["items"]} == {0}
    assert all(item["status"] == "pending" and item["quorum"] == 1 for item in page["items"])

    seen: list[str] = []
    token = None
    for _ in range(200):
        params: dict[str, Any] = {"limit": 2}
        if token:
            params["page_token"] = token
        answer = await alice.get("/approvals", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        token = body["next_page_token"]
        if token is None:
            break
    assert len(seen) == len(set(seen)), "an approval was listed twice"
    assert ours <= set(seen)

    only = await alice.get("/approvals", params={"tool": "write_file", "run": three.id})
    assert only.json()["items"] == []
    bad = await alice.get("/approvals", params={"page_token": "bm90IGEgdG9rZW4"})
    assert bad.status_code == 422 and "page_token is not one this API gave out" in bad.text
    decided = await alice.get("/approvals", params={"status": "approved"})
    assert decided.status_code == 422 and "add run=WORKFLOW_ID" in decided.json()["detail"]
    for handle in [three, *singles]:
        await handle.terminate("test done")


async def test_decisions_answer_with_the_runs_verdict(
    api: ServedApi, as_: dict[str, httpx.AsyncClient], client: Client, task_queue: str,
    workspace: Path,
) -> None:  # fmt: skip
    handle = await start_run(client, task_queue, workspace, script=deletes(*OLD_LOGS))
    records = {r.action_json.args["paths"][0]: r for r in await wait_pending(handle, 3)}
    approved, rejected, modified = (records[path].id for path in OLD_LOGS)
    alice, bob, carol = as_["alice"], as_["bob"], as_["carol"]
    ok = {"comment": "old logs"}

    async with api.http() as anonymous:
        nobody = await anonymous.post(f"/approvals/{approved}/approve", json=ok)
        assert nobody.status_code == 401 and "Authorization: Bearer" in nobody.json()["detail"]
        assert nobody.headers["www-authenticate"] == "Bearer"
    async with api.http("not-a-token") as stranger:
        assert (await stranger.get(f"/approvals/{approved}")).status_code == 401
    missing = await alice.post("/approvals/apr_0000000000000000/approve", json=ok)
    assert missing.status_code == 404 and "no run has an approval" in missing.json()["detail"]
    assert (await alice.get("/approvals/not an id")).status_code == 404

    # Who decides comes from the token: a body naming someone else is refused.
    spoofed = await alice.post(f"/approvals/{approved}/approve", json={**ok, "reviewer": "bob"})
    assert spoofed.status_code == 403 and "never as another reviewer" in spoofed.json()["detail"]
    # carol decides only write_file: a delete_files approval is none of hers to see.
    not_theirs = await carol.post(f"/approvals/{approved}/approve", json=ok)
    assert not_theirs.status_code == 404
    no_reason = await bob.post(f"/approvals/{rejected}/reject", json={"reason": "  "})
    assert no_reason.status_code == 422 and "a reason is required" in no_reason.json()["detail"]
    wrong_shape = await bob.post(f"/approvals/{modified}/modify", json={"args": {"paths": "x"}})
    assert wrong_shape.status_code == 422
    assert wrong_shape.json()["detail"].startswith(
        "not sent: the arguments are invalid for delete_files: paths:"
    )

    done = await alice.post(f"/approvals/{approved}/approve", json=ok)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["outcome"] == "applied" and body["message"] == "approved by alice"
    assert body["entry"]["issuer"] == "api" and body["record"]["status"] == "approved"
    again = await bob.post(f"/approvals/{approved}/approve", json={})
    assert again.status_code == 409
    assert again.json()["detail"].startswith(
        f"approval {approved} was already approved by alice at"
    )
    assert again.json()["entry"]["outcome"] == "refused"

    # Arguments the schema allows but the tool's own code refuses: the run's sentence.
    twice = {"args": {"paths": [NEW_LOGS[0], NEW_LOGS[0]]}}
    repeated = await bob.post(f"/approvals/{modified}/modify", json=twice)
    assert repeated.status_code == 422, repeated.text
    assert repeated.json()["detail"].startswith(
        "modified arguments are invalid for delete_files: paths: Value error, paths must not repeat"
    )
    changed = await bob.post(
        f"/approvals/{modified}/modify", json={"args": {"paths": [NEW_LOGS[0]]}}
    )
    assert changed.status_code == 200 and changed.json()["record"]["status"] == "modified"
    no = await bob.post(f"/approvals/{rejected}/reject", json={"reason": "keep it for the audit"})
    assert no.status_code == 200 and no.json()["message"] == "rejected by bob"
    revoke = await bob.post(f"/approvals/{approved}/revoke", json={"reason": "x"})
    # Nothing standing to revoke: the code and its status from the one table (FORMS).
    assert revoke.status_code == 409 and "granted no standing approval" in revoke.text
    assert revoke.json()["code"] == "not_applicable"

    await handle.result()
    assert files_in(workspace) == sorted([OLD_LOGS[1], OLD_LOGS[2], NEW_LOGS[1], *OTHER])
    run = (await alice.get(f"/runs/{handle.id}")).json()
    assert run["status"] == "completed"
    log = {a["id"]: [d["outcome"] for d in a["decisions"]] for a in run["approvals"]}
    assert log == {
        approved: ["applied", "refused"],
        rejected: ["applied"],
        modified: ["refused", "applied"],
    }
    listed = (await alice.get("/approvals", params={"run": handle.id, "status": "decided"})).json()
    assert {item["id"]: item["status"] for item in listed["items"]} == {
        approved: "approved",
        rejected: "rejected",
        modified: "modified",
    }
    runs = (await alice.get("/runs", params={"limit": 50})).json()
    assert handle.id in {item["id"] for item in runs}
    assert (await alice.get("/runs/no-such-run")).status_code == 404


async def test_a_refusal_says_its_code_and_its_status_is_the_codes(
    as_: dict[str, httpx.AsyncClient], client: Client, task_queue: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Clients branch on `code` (hitl.decisions.RefusalCode); the status is the code's."""
    handle = await start_run(
        client, task_queue, make_logs(tmp_path / "ws"), script=deletes(*OLD_LOGS[:2]),
        requested_by="bob",
    )  # fmt: skip
    records = {r.action_json.args["paths"][0]: r for r in await wait_pending(handle, 2)}
    first, second = (records[path].id for path in OLD_LOGS[:2])
    alice, bob = as_["alice"], as_["bob"]

    def said(answer: httpx.Response) -> tuple[int, str]:
        return answer.status_code, answer.json().get("code")

    unknown = await alice.post("/approvals/apr_0000000000000000/approve", json={})
    assert said(unknown) == (404, "not_found")
    own = await bob.post(f"/approvals/{first}/approve", json={})
    assert said(own) == (403, "not_allowed") and "started this run" in own.json()["detail"]
    schema = await alice.post(f"/approvals/{second}/modify", json={"args": {"paths": 1}})
    assert said(schema) == (422, "invalid_arguments")
    tool = await alice.post(
        f"/approvals/{second}/modify", json={"args": {"paths": [NEW_LOGS[0], NEW_LOGS[0]]}}
    )
    assert said(tool) == (422, "invalid_arguments") and tool.json()["entry"]["outcome"] == "refused"
    stale = await alice.post(f"/approvals/{first}/approve", json={"action_digest": "0" * 16})
    assert said(stale) == (409, "stale_action"), stale.text
    assert stale.json()["record"]["status"] == "pending"
    done = await alice.post(f"/approvals/{first}/approve", json={})
    assert done.status_code == 200 and "code" not in done.json()
    again = await as_["dave"].post(f"/approvals/{first}/reject", json={"reason": "late"})
    assert said(again) == (409, "already_decided")
    assert again.json()["record"]["reviewer"] == "alice"
    await handle.terminate("test done")


async def test_a_quorum_needs_two_reviewers_and_the_runs_requester_is_not_one(
    api: ServedApi, as_: dict[str, httpx.AsyncClient], client: Client, task_queue: str,
    workspace: Path, reviewers: tuple[Path, dict[str, str]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # The worker's copy of the reviewers file asks two approvers for risk 30 and up.
    stricter = tmp_path / "quorum.toml"
    stricter.write_text(reviewers[0].read_text() + "\n[[quorum]]\nmin_risk = 30\napprovals = 2\n")
    monkeypatch.setenv("HITL_REVIEWERS", str(stricter))
    handle = await start_run(
        client, task_queue, workspace, script=deletes(OLD_LOGS[0]), requested_by="bob"
    )
    [record] = await wait_pending(handle)
    assert record.quorum == 2
    url = f"/approvals/{record.id}/approve"

    own = await as_["bob"].post(url, json={})
    assert own.status_code == 403
    assert own.json()["detail"] == (
        "bob started this run and may not approve its delete_files calls themselves; "
        "another reviewer decides"
    )
    first = await as_["alice"].post(url, json={})
    assert first.status_code == 200, first.text
    assert first.json()["entry"]["note"] == "1 of 2 approvals"
    assert first.json()["record"]["status"] == "pending"
    assert first.json()["message"] == (
        "approval by alice recorded (1 of 2 approvals); it waits for more approvers"
    )
    [listed] = await wait_listed(as_["alice"], handle.id)
    twice = await as_["alice"].post(url, json={})
    assert twice.status_code == 409
    assert twice.json()["detail"] == (
        "alice has already approved this action; it needs 2 different approvers"
    )
    second = await as_["dave"].post(url, json={})
    assert second.status_code == 200 and second.json()["record"]["status"] == "approved"
    assert [vote["reviewer"] for vote in second.json()["record"]["votes"]] == ["alice", "dave"]
    assert second.json()["entry"]["note"] == "2 of 2 approvals"
    await handle.result()
    assert listed["quorum"] == 2


async def test_an_api_approval_resumes_the_agent_and_an_unsigned_signal_does_not(
    api: ServedApi, as_: dict[str, httpx.AsyncClient], env: WorkflowEnvironment, client: Client,
    task_queue: str, workspace: Path,
) -> None:  # fmt: skip
    handle = await start_run(client, task_queue, workspace, script=deletes(OLD_LOGS[0]))
    [record] = await wait_pending(handle)
    await temporal_cli(
        "workflow", "signal", "--address", env.client.service_client.config.target_host,
        "--workflow-id", handle.id, "--name", "approve",
        "--input", json.dumps({"approval_id": record.id, "reviewer": "alice"}),
    )  # fmt: skip
    [unsigned] = await wait_decisions(handle, record.id, 1)
    assert "an unsigned signal is refused" in (unsigned.refusal or "")

    sent = time.perf_counter()
    answer = await as_["alice"].post(f"/approvals/{record.id}/approve", json={})
    answered = time.perf_counter() - sent
    result = await handle.result()
    resumed = time.perf_counter() - sent
    print(f"\nAPI approval: answered in {answered * 1000:.0f} ms, agent finished {resumed:.2f} s")
    assert answer.status_code == 200, answer.text
    assert resumed < 5, f"the agent resumed {resumed:.1f} s after the API approval"
    [done] = result.approvals
    assert done.reviewer == "alice" and [d.outcome for d in done.decisions] == [
        "refused",
        "applied",
    ]
    assert OLD_LOGS[0] not in files_in(workspace)


async def read_events(response: httpx.Response, into: list[tuple[str, dict, float]]) -> None:
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            into.append((kind, json.loads(line.removeprefix("data: ")), time.time()))


async def until(events: list[tuple[str, dict, float]], kind: str, approval_id: str | None) -> dict:
    for _ in range(600):
        for seen, data, at in events:
            if seen == kind and (approval_id is None or data.get("id") == approval_id):
                return {**data, "received": at}
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {kind} event for {approval_id}: {events}")


async def test_events_say_pending_decided_and_timed_out(
    api: ServedApi, as_: dict[str, httpx.AsyncClient], client: Client, task_queue: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    events: list[tuple[str, dict, float]] = []
    async with as_["bob"].stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(response, events))
        await until(events, "ready", None)
        decided = await start_run(
            client, task_queue, make_logs(tmp_path / "a"), script=deletes(OLD_LOGS[0])
        )
        lapsing = await start_run(
            client, task_queue, make_logs(tmp_path / "b"), script=deletes(OLD_LOGS[0]),
            approval_timeout_seconds=2,
        )  # fmt: skip
        elsewhere = await start_run(
            client, task_queue, make_logs(tmp_path / "c"), script=deletes(OLD_LOGS[0])
        )
        [record] = await wait_pending(decided)
        [lapses] = await wait_pending(lapsing)
        [other] = await wait_pending(elsewhere)
        pending = await until(events, "approval.pending", record.id)
        assert pending["approval"]["tool"] == "delete_files" and pending["session_id"] == decided.id
        answer = await as_["bob"].post(f"/approvals/{record.id}/approve", json={})
        assert answer.status_code == 200
        done = await until(events, "approval.decided", record.id)
        assert (done["status"], done["reviewer"]) == ("approved", "bob")
        # Decided without the API (the library, as the CLI does): the poller notices.
        await until(events, "approval.pending", other.id)
        library = Reviews(client, signer=("api", decode_key(API_KEY)))
        rejected = await library.decide(
            RejectDecision(approval_id=other.id, reviewer="dave", reason="not now"),
            workflow_id=elsewhere.id,
        )
        assert rejected.applied
        noticed = await until(events, "approval.decided", other.id)
        assert (noticed["status"], noticed["reviewer"]) == ("rejected", "dave")
        timed_out = await until(events, "approval.timed_out", lapses.id)
        assert timed_out["reviewer"] == "system:timeout" and timed_out["status"] == "rejected"
        reader.cancel()
    ended = [
        data["id"]
        for kind, data, _ in events
        if kind.startswith("approval.") and "status" in data and data["status"]
    ]
    assert sorted(ended) == sorted([record.id, other.id, lapses.id]), "an ending was said twice"
    from datetime import datetime

    delay = done["received"] - datetime.fromisoformat(done["reviewed_at"]).timestamp()
    print(f"\n/events: a decision reached a subscriber {delay * 1000:.0f} ms after the run took it")
    await decided.result()
    await lapsing.result()
    await elsewhere.result()


async def test_the_inbox_is_served_with_a_strict_policy_and_no_cors(api: ServedApi) -> None:
    async with api.http() as http:
        page = await http.get("/", headers={"Origin": "https://evil.example"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in page.headers
        script = await http.get("/inbox.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "<script>" not in page.text.replace('<script src="/inbox.js" defer></script>', "")
        preflight = await http.options(
            "/approvals",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        health = (await http.get("/healthz")).json()
        assert health == {"status": "ok", "auth": "bearer", "signing": True, "reviewer": None}
        huge = await http.post(
            "/approvals/apr_1/modify", content=b"{" + b" " * 300_000 + b"}",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert huge.status_code == 413
        schema = (await http.get("/openapi.json")).json()
        assert {
            "/approvals",
            "/approvals/{approval_id}/approve",
            "/events",
            "/runs/{workflow_id}",
        } <= set(schema["paths"])


async def test_a_token_replaced_in_the_reviewers_file_stops_working_at_once(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    reviewers = tmp_path / "reviewers.toml"
    old = add_reviewer(reviewers, "erin")
    async with ServedApi(env.client, reviewers) as served, served.http(old) as erin:
        assert (await erin.get("/runs", params={"limit": 1})).status_code == 200
        new = add_reviewer(reviewers, "erin")  # `hitl reviewers add erin` again: a new token
        assert (await erin.get("/runs", params={"limit": 1})).status_code == 401
        async with served.http(new) as renewed:
            assert (await renewed.get("/healthz")).json()["reviewer"] == "erin"
        reviewers.write_text("not toml [")
        broken = await erin.get("/runs")
        assert broken.status_code == 503 and "reviewers file can't be read" in broken.text


async def serve(*args: str, **env: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hitl.cli", "serve", *args,
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "HITL_"))},
            "TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_hitl_serve_without_reviewers_refuses_unless_told_loudly(
    env: WorkflowEnvironment,
) -> None:
    refused = await serve("--port", "0")
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 2
    assert "no reviewers to authenticate: set HITL_REVIEWERS" in err.decode()
    assert "--insecure-no-auth" in err.decode()

    address = env.client.service_client.config.target_host
    insecure = await serve("--port", "0", "--insecure-no-auth", TEMPORAL_ADDRESS=address)
    assert insecure.stderr is not None
    said = ""
    while "the inbox and the API on" not in said:
        line = await asyncio.wait_for(insecure.stderr.readline(), 30)
        assert line, f"hitl serve ended: {said}"
        said += line.decode()
    assert "DECISIONS ARE UNAUTHENTICATED" in said
    url = said.rsplit("the inbox and the API on ", 1)[1].strip()
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).json()["auth"] == "none"
        # No authentication: only loopback names, so a page can't rebind its DNS name here.
        rebound = await http.get("/healthz", headers={"Host": "evil.example"})
        assert rebound.status_code == 421
    insecure.terminate()
    await asyncio.wait_for(insecure.wait(), 20)
    assert insecure.returncode == 0


async def test_a_reviewer_sees_only_the_approvals_they_may_read(
    client: Client, task_queue: str, tmp_path: Path
) -> None:
    path = tmp_path / "readers.toml"
    frank = add_reviewer(path, "frank", tools=["send_email"])
    grace = add_reviewer(path, "grace", tools=["send_email"])
    path.write_text(path.read_text() + 'read = ["*"]\n')  # grace's table is the last one
    email = turn(("send_email", {"to": "ops@example.com", "subject": "s", "body": "b"}))
    frank_saw: list[tuple[str, dict, float]] = []
    grace_saw: list[tuple[str, dict, float]] = []
    async with (
        ServedApi(client, path) as served,
        served.http(frank) as as_frank,
        served.http(grace) as as_grace,
        as_frank.stream("GET", "/events") as frank_stream,
        as_grace.stream("GET", "/events") as grace_stream,
    ):
        readers = [
            asyncio.create_task(read_events(frank_stream, frank_saw)),
            asyncio.create_task(read_events(grace_stream, grace_saw)),
        ]
        await until(frank_saw, "ready", None)
        await until(grace_saw, "ready", None)
        deleting = await start_run(
            client, task_queue, make_logs(tmp_path / "a"), script=deletes(OLD_LOGS[0])
        )
        [record] = await wait_pending(deleting)
        await until(grace_saw, "approval.pending", record.id)
        mailing = await start_run(client, task_queue, make_logs(tmp_path / "b"), script=[email])
        [mail] = await wait_pending(mailing)
        # One poller feeds both streams in one order: frank's shows the email approval, so
        # it would have shown the delete approval, announced before it.
        await until(frank_saw, "approval.pending", mail.id)
        assert record.id not in {data.get("id") for _, data, _ in frank_saw}
        for task in readers:
            task.cancel()

        # grace may read every tool; frank only what he decides.
        [listed] = await wait_listed(as_grace, deleting.id)
        assert listed["id"] == record.id
        hidden = await as_frank.get("/approvals", params={"run": deleting.id})
        assert hidden.status_code == 200 and hidden.json()["items"] == []
        assert [item["id"] for item in await wait_listed(as_frank, mailing.id)] == [mail.id]
        everything = await as_frank.get("/approvals", params={"limit": 500})
        assert record.id not in {item["id"] for item in everything.json()["items"]}
        decided = await as_frank.get("/approvals", params={"run": deleting.id, "status": "all"})
        assert decided.json()["items"] == []

        # Not found, word for word as an approval that does not exist: nothing leaks.
        unknown = await as_frank.get("/approvals/apr_0000000000000000")
        unseen = await as_frank.get(f"/approvals/{record.id}")
        assert (unseen.status_code, unknown.status_code) == (404, 404)
        assert unseen.json()["detail"] == unknown.json()["detail"].replace(
            "apr_0000000000000000", record.id
        )
        deciding = await as_frank.post(f"/approvals/{record.id}/reject", json={"reason": "no"})
        assert deciding.status_code == 404 and deciding.json() == unseen.json()
        assert (await as_frank.get(f"/runs/{deleting.id}")).json()["approvals"] == []

        # Reading is not deciding.
        shown = await as_grace.get(f"/approvals/{record.id}")
        assert shown.status_code == 200 and shown.json()["action_json"]["tool"] == "delete_files"
        assert len((await as_grace.get(f"/runs/{deleting.id}")).json()["approvals"]) == 1
        # What was sent to the run naming no approval is shown only to who reads every tool.
        await deleting.signal("approve", {"approval_id": "apr_nothing", "reviewer": "x"})
        await wait_decisions(deleting, None, 1)
        assert (await as_frank.get(f"/runs/{deleting.id}")).json()["refused_decisions"] == []
        assert len((await as_grace.get(f"/runs/{deleting.id}")).json()["refused_decisions"]) == 1
        refused = await as_grace.post(f"/approvals/{record.id}/approve", json={})
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "grace may not decide delete_files calls (their tools: send_email)"
        )

    # Without authentication (--insecure-no-auth) everything is seen.
    async with ServedApi(client, None) as open_api, open_api.http() as anyone:
        assert (await anyone.get(f"/approvals/{record.id}")).status_code == 200
        assert [item["id"] for item in await wait_listed(anyone, deleting.id)] == [record.id]
    await deleting.terminate("test done")
    await mailing.terminate("test done")


async def test_a_body_that_is_not_json_is_a_400_that_says_what_to_send(
    as_: dict[str, httpx.AsyncClient],
) -> None:
    bob = as_["bob"]
    url = "/approvals/apr_0000000000000000"
    as_json = {"Content-Type": "application/json"}
    cut = await bob.post(f"{url}/approve", content=b'{"comment": "ok"', headers=as_json)
    assert cut.status_code == 400, cut.text
    assert cut.json()["detail"].startswith("the body is not JSON: ")
    assert cut.json()["detail"].endswith('; send a JSON object such as {"comment": "old logs"}')
    examples = {"reject": '{"reason": ', "modify": '{"args": {', "revoke": '{"reason": '}
    for route, example in examples.items():
        answer = await bob.post(f"{url}/{route}", content=b"{nope", headers=as_json)
        assert answer.status_code == 400, (route, answer.text)
        assert f"send a JSON object such as {example}" in answer.json()["detail"]
    form = await bob.post(
        f"{url}/reject",
        content=b"reason=keep",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 400
    assert "sent as application/x-www-form-urlencoded" in form.json()["detail"]
    empty = await bob.post(f"{url}/approve", content=b"", headers=as_json)
    assert empty.status_code == 400 and "it is empty" in empty.json()["detail"]

    # JSON of the wrong shape stays a 422 that names the field.
    wrong = await bob.post(f"{url}/reject", json={"reason": 5})
    assert wrong.status_code == 422 and wrong.json()["detail"].startswith("body.reason:")
    assert (await bob.post(f"{url}/approve", json=[1])).status_code == 422
    schema = (await bob.get("/openapi.json")).json()
    for route in ("approve", "reject", "modify", "revoke"):
        assert "400" in schema["paths"][f"/approvals/{{approval_id}}/{route}"]["post"]["responses"]


async def test_a_decision_with_no_worker_is_answered_in_time_and_applied_once(
    as_: dict[str, httpx.AsyncClient], client: Client, tmp_path: Path
) -> None:
    queue = f"tq-away-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        handle = await start_run(
            client, queue, make_logs(tmp_path / "ws"), script=deletes(OLD_LOGS[0])
        )
        [record] = await wait_pending(handle)
        await wait_listed(as_["alice"], handle.id)
    sent = time.perf_counter()
    answer = await as_["alice"].post(f"/approvals/{record.id}/approve", json={})
    took = time.perf_counter() - sent
    print(f"\nno worker: the API answered {answer.status_code} after {took:.2f} s")
    assert answer.status_code == 202, answer.text
    assert answer.json()["outcome"] == "sent"
    assert took < CONFIRM_SECONDS + 1, f"202 after {took:.1f} s"
    # Durable: the decision is in the run's history (a signal), not only in the server's
    # memory (an update no worker took), so a server restart now would not lose it.
    from temporalio.api.enums.v1 import EventType

    history = await handle.fetch_history()
    assert any(
        event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        for event in history.events
    )
    async with build_worker(client, queue):
        result = await asyncio.wait_for(handle.result(), 30)
    # Both copies reached the run; it applied one and the log holds it once.
    [approval] = result.approvals
    assert [(entry.outcome, entry.reviewer) for entry in approval.decisions] == [
        ("applied", "alice")
    ]
    assert OLD_LOGS[0] not in files_in(tmp_path / "ws")


async def test_a_run_started_through_the_api_is_asked_for_by_the_tokens_reviewer(
    env: WorkflowEnvironment,
    reviewers: tuple[Path, dict[str, str]],
    client: Client,
    task_queue: str,
    tmp_path: Path,
) -> None:
    """POST /runs: the token says who asks, the API signs it, the worker verifies it, and
    that reviewer may not approve the run's actions."""
    make_logs(tmp_path / "root" / "team" / "ws")
    async with ServedApi(
        env.client, reviewers[0], task_queue=task_queue, workspace_root=str(tmp_path / "root")
    ) as served:
        bob, dave = served.http(reviewers[1]["bob"]), served.http(reviewers[1]["dave"])
        body = {"task": CLEANUP_TASK, "workspace": "team/ws", "reviewer": "dave"}
        answer = await bob.post("/runs", json=body)
        assert answer.status_code == 422, "a body can't name who asks"
        del body["reviewer"]
        for outside in ("/etc", "../ws", "team/../../x", ""):
            refused = await bob.post("/runs", json={**body, "workspace": outside})
            assert refused.status_code in (400, 422), (outside, refused.text)
        answer = await bob.post("/runs", json=body)
        assert answer.status_code == 201, answer.text
        started = answer.json()
        assert started["requested_by"] == "bob" and started["signed"] is True
        handle = client.get_workflow_handle(started["id"])
        [record] = await wait_pending(handle)
        assert record.context.requested_by == "bob" and record.context.requester_verified
        assert record.context.original_request == CLEANUP_TASK
        own = await bob.post(f"/approvals/{record.id}/approve", json={})
        assert own.status_code == 403 and "started this run" in own.json()["detail"]
        other = await dave.post(f"/approvals/{record.id}/approve", json={})
        assert other.status_code == 200, other.text
        await asyncio.wait_for(handle.result(), 30)
        make_logs(tmp_path / "root" / "team" / "ws")
        twice = {**body, "id": f"dup-{task_queue}"}
        assert (await bob.post("/runs", json=twice)).status_code == 201
        again = await bob.post("/runs", json=twice)
        assert again.status_code == 409 and "already running" in again.json()["detail"]
        await client.get_workflow_handle(twice["id"]).terminate("done")
        await bob.aclose()
        await dave.aclose()
    async with ServedApi(env.client, reviewers[0], task_queue=task_queue) as served:
        async with served.http(reviewers[1]["bob"]) as bob:
            off = await bob.post("/runs", json=body)
            assert off.status_code == 403 and "HITL_WORKSPACE_ROOT" in off.json()["detail"]
