"""Record the workflow histories that every later version of the code must replay.

    .venv/bin/python -m tests.histories.record LABEL

Runs one agent run per kind of pause against a fresh dev server, with the workflow
code as it is in this checkout, and writes each history twice: as it stood while the
run was paused (`LABEL-KIND-paused.json`) and once the run had completed
(`LABEL-KIND-completed.json`). Record a new set under a new label whenever the
workflow code changes (docs/upgrades.md); never re-record an old label.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from hitl import contract
from hitl.devserver import temporal_binary
from tests.conftest import OLD_LOGS, make_logs
from tests.helpers import (
    SlowQueries,
    split_after_local_activity,
    start_run,
    turn,
    wait_pending,
)
from worker import build_worker

HERE = Path(__file__).resolve().parent


def _decision(approval_id: str, reviewer: str, **fields: Any) -> dict[str, Any]:
    return {"approval_id": approval_id, "reviewer": reviewer, **fields}


async def single(client: Client, queue: str, ws: Path, save: Any) -> None:
    handle = await start_run(client, queue, ws)
    [record] = await wait_pending(handle)
    await save("paused", handle)
    await handle.signal(contract.SIGNAL_APPROVE, _decision(record.id, "alice", comment="ok"))
    await handle.result()
    await save("completed", handle)


async def parallel(client: Client, queue: str, ws: Path, save: Any) -> None:
    script = [
        turn(
            ("delete_files", {"paths": [OLD_LOGS[0]]}),
            ("write_file", {"path": "config/app.yaml", "content": "level: debug\n"}),
            ("find_files", {"pattern": "*.yaml"}),
        )
    ]
    handle = await start_run(client, queue, ws, script=script)
    pending = await wait_pending(handle, count=2)
    await save("paused", handle)
    first, second = sorted(pending, key=lambda record: record.action_json.tool)
    await handle.signal(contract.SIGNAL_APPROVE, _decision(first.id, "bob"))
    await handle.signal(contract.SIGNAL_REJECT, _decision(second.id, "bob", reason="not yet"))
    await handle.result()
    await save("completed", handle)


async def modified(client: Client, queue: str, ws: Path, save: Any) -> None:
    handle = await start_run(client, queue, ws)
    [record] = await wait_pending(handle)
    await save("paused", handle)
    await handle.signal(
        contract.SIGNAL_MODIFY, _decision(record.id, "carol", args={"paths": [OLD_LOGS[0]]})
    )
    await handle.result()
    await save("completed", handle)


async def refused(client: Client, queue: str, ws: Path, save: Any) -> None:
    handle = await start_run(client, queue, ws)
    [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_MODIFY, _decision(record.id, "dan", args={"paths": []}))
    await handle.signal(contract.SIGNAL_APPROVE, _decision("apr_doesnotexist", "dan"))
    await handle.signal(contract.SIGNAL_APPROVE, {"approval_id": record.id})
    await handle.signal(contract.SIGNAL_REJECT, "just reject it")
    await asyncio.sleep(1)
    await save("paused", handle)
    await handle.signal(contract.SIGNAL_APPROVE, _decision(record.id, "dan"))
    await handle.signal(contract.SIGNAL_REJECT, _decision(record.id, "erin", reason="late"))
    await handle.result()
    await save("completed", handle)


async def timed_out(client: Client, queue: str, ws: Path, save: Any) -> None:
    handle = await start_run(client, queue, ws, tool_approval_timeouts={"delete_files": 1.5})
    await wait_pending(handle)
    await save("paused", handle)
    await handle.result()
    await save("completed", handle)


async def continued(client: Client, queue: str, ws: Path, save: Any) -> None:
    """Junk decisions push a waiting run over its history limit: it continues as new."""
    from hitl.models import RunLimits

    handle = await start_run(client, queue, ws, limits=RunLimits(continue_as_new_events=200))
    [record] = await wait_pending(handle)
    first = (await handle.describe()).run_id
    latest = client.get_workflow_handle(handle.id)
    for batch in range(40):
        await asyncio.gather(
            *(handle.signal(contract.SIGNAL_APPROVE, _decision(f"apr_j{batch}_{i}", "x"))
              for i in range(10))
        )  # fmt: skip
        await asyncio.sleep(0.1)
        if (await latest.describe()).run_id != first:
            break
    await save("before", client.get_workflow_handle(handle.id, run_id=first))
    await wait_pending(latest)
    await save("paused", latest)
    await latest.signal(contract.SIGNAL_APPROVE, _decision(record.id, "alice"))
    await latest.result()
    await save("completed", latest)


async def standing(client: Client, queue: str, ws: Path, save: Any) -> None:
    """Approved for the rest of the run: the second call is approved by the standing one."""
    script = [
        turn(("delete_files", {"paths": [OLD_LOGS[0]]})),
        turn(("delete_files", {"paths": [OLD_LOGS[1]]})),
    ]
    handle = await start_run(client, queue, ws, script=script)
    [record] = await wait_pending(handle)
    await save("paused", handle)
    await handle.signal(
        contract.SIGNAL_APPROVE, _decision(record.id, "alice", scope="tool", max_risk=100)
    )
    await handle.result()
    await save("completed", handle)


@contextlib.contextmanager
def _signed_quorum(
    client: Client, ws: Path, reviewers: tuple[str, ...], min_risk: int
) -> Iterator[Any]:
    """A worker environment that takes only the API's signed decisions from `reviewers`,
    two of them from `min_risk` on; yields the API's `Reviews`."""
    from hitl.reviewers import add_reviewer, decode_key, new_key
    from hitl.reviews import Reviews

    path = ws.parent / f"{ws.name}-reviewers.toml"
    for name in reviewers:
        add_reviewer(path, name)
    with path.open("a") as file:
        file.write(f"\n[[quorum]]\nmin_risk = {min_risk}\napprovals = 2\n")
    key = new_key()
    with _environment(HITL_REVIEWERS=str(path), HITL_DECISION_KEYS=f"api:{key}"):
        yield Reviews(client, signer=("api", decode_key(key)))


async def quorum(client: Client, queue: str, ws: Path, save: Any) -> None:
    """Signed decisions through the `decide` update, two approvers needed."""
    from hitl.models import ApproveDecision

    with _signed_quorum(client, ws, ("alice", "bob"), min_risk=0) as reviews:
        handle = await start_run(client, queue, ws)
        [record] = await wait_pending(handle)
        assert record.quorum == 2, record.quorum
        first = await reviews.decide(
            ApproveDecision(approval_id=record.id, reviewer="alice"), workflow_id=handle.id
        )
        assert first.applied, first
        await save("paused", handle)
        second = await reviews.decide(
            ApproveDecision(approval_id=record.id, reviewer="bob"), workflow_id=handle.id
        )
        assert second.applied, second
        await handle.result()
        await save("completed", handle)


async def riskier(client: Client, queue: str, ws: Path, save: Any) -> None:
    """A modification into a riskier action needs the quorum that risk needs."""
    from hitl.models import ApproveDecision, ModifyDecision

    with _signed_quorum(client, ws, ("bob", "dave"), min_risk=60) as reviews:
        script = [turn(("write_file", {"path": "notes.txt", "content": "hi"}))]
        handle = await start_run(client, queue, ws, script=script)
        [record] = await wait_pending(handle)
        modified = await reviews.decide(
            ModifyDecision(
                approval_id=record.id,
                reviewer="bob",
                args={"path": "config/app.yaml", "content": "debug: true"},
            ),
            workflow_id=handle.id,
        )
        assert modified.entry is not None and modified.entry.note == "1 of 2 approvals", modified
        await save("paused", handle)
        second = await reviews.decide(
            ApproveDecision(approval_id=record.id, reviewer="dave"), workflow_id=handle.id
        )
        assert second.applied, second
        await handle.result()
        await save("completed", handle)


async def escalated(client: Client, queue: str, ws: Path, save: Any) -> None:
    """Nobody decides within a second: the worker's escalation asks the on-call group, and
    one of them (who may not decide the tool otherwise) approves."""
    from hitl.models import ApproveDecision
    from hitl.reviewers import add_reviewer, decode_key, new_key
    from hitl.reviews import Reviews

    path = ws.parent / f"{ws.name}-reviewers.toml"
    add_reviewer(path, "alice")
    add_reviewer(path, "olga", tools=["read_file"], groups=["oncall"])
    with path.open("a") as file:
        file.write('\n[[escalation]]\nescalate_after = 1\nto = "oncall"\n')
    key = new_key()
    with _environment(HITL_REVIEWERS=str(path), HITL_DECISION_KEYS=f"api:{key}"):
        reviews = Reviews(client, signer=("api", decode_key(key)))
        handle = await start_run(client, queue, ws)
        [record] = await wait_pending(handle)
        for _ in range(200):
            [record] = await wait_pending(handle)
            if record.escalations:
                break
            await asyncio.sleep(0.05)
        assert [step.to for step in record.escalations] == [["olga"]], record.escalations
        await save("paused", handle)
        approved = await reviews.decide(
            ApproveDecision(approval_id=record.id, reviewer="olga"), workflow_id=handle.id
        )
        assert approved.applied, approved
        await handle.result()
        await save("completed", handle)


async def ruled(client: Client, queue: str, ws: Path, save: Any) -> None:
    """The worker's rules act: one call approved by a rule, one denied by a rule, the third
    asked of a person (no rule matches)."""
    rules = ws.parent / f"{ws.name}-rules.toml"
    rules.write_text(
        'mode = "act"\n\n'
        '[[rule]]\nname = "no-config"\neffect = "deny"\nreason = "config is not ours"\n'
        'tool = "write_file"\nargs = { path = "path", prefix = "config/" }\n\n'
        '[[rule]]\nname = "one-old-log"\neffect = "approve"\nreason = "routine"\n'
        f'tool = "delete_files"\nargs = {{ path = "paths.0", equals = "{OLD_LOGS[0]}" }}\n'
        "risk = { lt = 40 }\n"
    )
    script = [
        turn(("delete_files", {"paths": [OLD_LOGS[0]]})),
        turn(("write_file", {"path": "config/app.yaml", "content": "debug: true"})),
        turn(("delete_files", {"paths": OLD_LOGS[1:]})),
    ]
    with _environment(HITL_RULES=str(rules)):
        handle = await start_run(client, queue, ws, script=script)
        [record] = await wait_pending(handle)
        assert record.action_json.args["paths"] == OLD_LOGS[1:], record.action_json
        await save("paused", handle)
        await handle.signal(contract.SIGNAL_APPROVE, _decision(record.id, "alice"))
        result = await handle.result()
        ruled = [r.rule.rule for r in result.approvals if r.rule is not None]
        assert sorted(ruled) == ["no-config", "one-old-log"], result.approvals
        await save("completed", handle)


async def raced(client: Client, ws: Path, save: Any) -> None:
    """Two reviewers decide while no worker runs (updates held, signals sent): one
    applies, the other is refused, and every decide update is answered."""
    from hitl.models import ApproveDecision, RejectDecision
    from hitl.reviews import Reviews

    queue = f"record-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        handle = await start_run(client, queue, ws)
        [record] = await wait_pending(handle)
    reviews = Reviews(client, confirm_seconds=1, signer=None)
    await asyncio.gather(
        reviews.decide(ApproveDecision(approval_id=record.id, reviewer="alice"), handle.id),
        reviews.decide(
            RejectDecision(approval_id=record.id, reviewer="bob", reason="no"), handle.id
        ),
    )
    await save("paused", handle)
    async with build_worker(client, queue):
        await asyncio.wait_for(handle.result(), 60)
    await save("completed", handle)


async def late(client: Client, ws: Path, save: Any) -> None:
    """Two decisions raced while no worker runs, judged while a query waiting for that
    workflow task is answered late: verify_decision's marker ends its task, the settled
    approval (its queued decision answered) is in the next."""
    from hitl.models import ApprovalRecord

    queue = f"record-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        handle = await start_run(client, queue, ws)
        [record] = await wait_pending(handle)
    await handle.signal(contract.SIGNAL_APPROVE, _decision(record.id, "alice", decision_id="a"))
    await handle.signal(
        contract.SIGNAL_REJECT, _decision(record.id, "bob", reason="no", decision_id="b")
    )
    asked = asyncio.create_task(
        handle.query(contract.QUERY_APPROVALS, result_type=list[ApprovalRecord])
    )
    await asyncio.sleep(0.5)
    await save("paused", handle)
    async with build_worker(client, queue, interceptors=[SlowQueries()]):
        await asyncio.wait_for(asked, 30)
        await asyncio.wait_for(handle.result(), 60)
    history = await handle.fetch_history()
    assert split_after_local_activity(history), "the late query split no workflow task"
    await save("completed", handle)


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


SCENARIOS: dict[str, Any] = {
    "single": single,
    "parallel": parallel,
    "modified": modified,
    "refused": refused,
    "timed-out": timed_out,
    "continued": continued,
    "standing": standing,
    "quorum": quorum,
    "riskier": riskier,
    "escalated": escalated,
    "ruled": ruled,
}


async def record(label: str, out: Path) -> list[Path]:
    written: list[Path] = []
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=list(contract.SEARCH_ATTRIBUTES),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        # The SDK waits 5 s by default; a busy CI machine can take longer to start it.
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    try:
        client = env.client
        with tempfile.TemporaryDirectory() as tmp:

            def saver(kind: str) -> Callable[[str, WorkflowHandle], Awaitable[None]]:
                async def save(stage: str, handle: WorkflowHandle) -> None:
                    history = await handle.fetch_history()
                    path = out / f"{label}-{kind}-{stage}.json"
                    path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
                    written.append(path)

                return save

            for kind, scenario in SCENARIOS.items():
                queue = f"record-{uuid.uuid4().hex[:8]}"
                ws = make_logs(Path(tmp) / kind)
                async with build_worker(client, queue):
                    await scenario(client, queue, ws, saver(kind))

            await raced(client, make_logs(Path(tmp) / "raced"), saver("raced"))
            await late(client, make_logs(Path(tmp) / "late"), saver("late"))

            # Paused under one worker, decided while none runs, finished by a new one.
            queue = f"record-{uuid.uuid4().hex[:8]}"
            ws = make_logs(Path(tmp) / "worker-restart")
            save = saver("worker-restart")
            async with build_worker(client, queue):
                handle = await start_run(client, queue, ws)
                [pending] = await wait_pending(handle)
            await handle.signal(contract.SIGNAL_APPROVE, _decision(pending.id, "after-restart"))
            await save("paused", handle)
            async with build_worker(client, queue, max_cached_workflows=0):
                await handle.result()
            await save("completed", handle)
    finally:
        await env.shutdown()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", help="e.g. v1 (the version of the workflow code)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if list(args.out.glob(f"{args.label}-*.json")):
        sys.exit(f"histories labelled {args.label} exist already; choose a new label")
    for path in asyncio.run(record(args.label, args.out)):
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


if __name__ == "__main__":
    main()
