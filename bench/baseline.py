"""The baseline: a minimal approval workflow written the obvious way, on a default worker."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def baseline_action(key: str) -> str:
    return key


@activity.defn
async def baseline_step(step: int) -> int:
    return step


@workflow.defn(name="BaselineApproval")
class BaselineApproval:
    """Waits for an `approve` signal, then runs one activity."""

    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.run
    async def run(self, key: str) -> str:
        await workflow.wait_condition(lambda: self.approved)
        return await workflow.execute_activity(
            baseline_action, key, start_to_close_timeout=timedelta(seconds=60)
        )


@workflow.defn(name="BaselineLoop")
class BaselineLoop:
    """`steps` iterations of two activities: the shape of an agent loop, nothing else."""

    @workflow.run
    async def run(self, steps: int) -> int:
        for step in range(steps):
            await workflow.execute_activity(
                baseline_step, step, start_to_close_timeout=timedelta(seconds=60)
            )
            await workflow.execute_activity(
                baseline_step, step, start_to_close_timeout=timedelta(seconds=60)
            )
        return steps
