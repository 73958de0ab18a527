"""Heartbeats while an activity waits, so a worker that dies is noticed in seconds.

Without them Temporal only retries an activity whose worker died once its whole
start-to-close timeout has passed (minutes for the model, up to an hour for a
command); with them the workflow sets `heartbeat_timeout` to a few beats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

HEARTBEAT_SECONDS = 2.0
"""How often an activity heartbeats while it waits; workflows allow about five beats."""

R = TypeVar("R")


async def heartbeating(work: Awaitable[R]) -> R:
    """`work`'s result, heartbeating every HEARTBEAT_SECONDS until it is done.

    A heartbeat also delivers cancellation: a cancelled run stops waiting.
    """

    if not activity.in_activity() or activity.info().is_local:
        # A local activity runs inside its workflow task: there is no heartbeat to send.
        return await work

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    beating = asyncio.create_task(beat())
    try:
        return await work
    finally:
        beating.cancel()
