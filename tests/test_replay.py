"""Runs paused on any earlier version of the workflow code keep working on this one.

Every history recorded in tests/histories (by `python -m tests.histories.record LABEL`,
once per version of the workflow code, paused and completed for each kind of pause)
must replay without a nondeterminism error on today's code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from hitl.plugin import HitlPlugin
from workflows import ALL_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_every_kind_of_pause_has_a_recorded_history() -> None:
    kinds = {path.stem.split("-", 1)[1].rsplit("-", 1)[0] for path in HISTORIES}
    assert {"single", "parallel", "modified", "timed-out", "worker-restart"} <= kinds
    latest = max((path.stem.split("-", 1)[0] for path in HISTORIES), key=lambda v: int(v[1:]))
    assert {"continued", "standing", "quorum", "riskier", "raced", "late"} <= {
        path.stem.split("-", 1)[1].rsplit("-", 1)[0]
        for path in HISTORIES
        if path.stem.startswith(latest + "-")
    }, "today's workflow code has histories of every kind of pause it added"


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays_on_todays_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=ALL_WORKFLOWS,
        data_converter=pydantic_data_converter,
        plugins=[HitlPlugin()],
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
