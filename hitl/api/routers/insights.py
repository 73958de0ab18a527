"""/audit (every approval with every decision over a time range, streamed as JSON Lines
or CSV) and /insights (the figures of `hitl.insights`).

Who may export: any authenticated reviewer, and each sees only approvals of tools they may
read (`Identity.may_read`: those they may decide and those the reviewers file lets them
`read`), as in a run's audit (`GET /runs/{id}`); an auditor who must see everything is
given `read = ["*"]`. What was left out is counted (`withheld`), never shown. The same
holds for /insights: its figures are over the approvals the reviewer may read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hitl.api.deps import State, Who
from hitl.api.errors import ApiError, responses
from hitl.durations import RangeError, time_range
from hitl.export import MEDIA_TYPES, Format, Tally, lines
from hitl.insights import MIN_DECISIONS, MIN_RATE, Insights, InsightsBuilder
from hitl.models import ApprovalRecord

router = APIRouter(tags=["insights"], responses=responses(401, 422, 503))

INSIGHTS_SECONDS = 120.0
"""How long one /insights request reads runs at most before answering with the figures it
has (`complete` false, a problem saying so): any reviewer may ask for ten years, and each
request would otherwise hold the API reading every run of them."""

RANGE_PATTERN = (
    r"^\s*(\d+(\.\d+)?\s*(ms|s|m|min|h|d)?"
    r"|\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?(Z|[+-]\d{2}:?\d{2})?)\s*$"
)
"""What `hitl.durations.parse_moment` reads; it refuses more (0d, too far back, a day
that does not exist) with a 422 that says why."""
Since = Annotated[
    str,
    Query(
        max_length=40,
        pattern=RANGE_PATTERN,
        description="from this long ago (30d, 12h, 90m) or this date or time (ISO 8601, UTC "
        "without a zone)",
    ),
]
Until = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=RANGE_PATTERN,
        description="up to (not including) this moment; default: now",
    ),
]


def _range(since: str, until: str | None) -> tuple[datetime, datetime | None]:
    try:
        return time_range(since, until)
    except RangeError as error:
        raise ApiError(422, str(error)) from None


async def _primed(records: AsyncIterator[ApprovalRecord]) -> AsyncIterator[ApprovalRecord]:
    """`records` with its first one already read: a listing Temporal refuses is answered
    as an error before the 200 goes out, not as a stream cut short."""
    try:
        first = await anext(records)
    except StopAsyncIteration:
        return _empty()

    async def rest() -> AsyncIterator[ApprovalRecord]:
        yield first
        async for record in records:
            yield record

    return rest()


async def _empty() -> AsyncIterator[ApprovalRecord]:
    return
    yield  # an async generator that yields nothing


@router.get(
    "/audit",
    summary="Export approvals over a time range",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "JSON Lines (one approval a line, then an end line) or CSV (one "
            "row per decision, then problem rows and an end row); see the README",
            "content": {MEDIA_TYPES["jsonl"]: {}, MEDIA_TYPES["csv"]: {}},
        }
    },
)
async def export(
    state: State,
    who: Who,
    since: Since,
    until: Until = None,
    form: Annotated[Format, Query(alias="format", description="jsonl or csv")] = "jsonl",
) -> StreamingResponse:
    """Every approval created in [since, until), across runs and continue-as-new chains,
    with every decision, streamed. Its last line says how many approvals and decisions it
    holds, how many were withheld (tools this reviewer may not read), and the runs that
    could not be read: `complete` is false then, and the export is short by them."""
    start, end = _range(since, until)
    config = state.config
    problems: list[str] = []
    tally = Tally(problems=problems)
    records = await _primed(state.reviews.records(start, end, problems=problems))
    name = f"hitl-audit-{start:%Y%m%dT%H%M%SZ}.{form}"
    return StreamingResponse(
        lines(records, form, tally, lambda r: who.may_read(config, r.action_json.tool)),
        media_type=MEDIA_TYPES[form],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/insights", response_model=Insights, summary="Approval figures over a time range")
async def insights(
    state: State,
    who: Who,
    since: Since = "30d",
    until: Until = None,
    min_decisions: Annotated[int, Query(ge=1, le=1_000_000)] = MIN_DECISIONS,
    min_rate: Annotated[float, Query(gt=0, le=1)] = MIN_RATE,
) -> Insights:
    """Outcome rates and time to decide per tool and per reviewer, load over time, shadow
    rules' agreement with people, and candidates for a rule or a standing approval, over
    the approvals of tools this reviewer may read. `complete` is false when some runs
    could not be read, or reading took longer than 120 s (`problems`)."""
    start, end = _range(since, until)
    config = state.config
    builder = InsightsBuilder(
        start, end, now=datetime.now(UTC), min_decisions=min_decisions, min_rate=min_rate
    )
    try:
        async with asyncio.timeout(INSIGHTS_SECONDS):
            async for record in state.reviews.records(start, end, problems=builder.problems):
                if who.may_read(config, record.action_json.tool):
                    builder.add(record)
                else:
                    builder.withheld += 1
    except TimeoutError:
        builder.problems.append(
            f"stopped reading runs after {INSIGHTS_SECONDS:g} s: the figures cover only the "
            "runs read by then; narrow the range (since, until) or use hitl stats"
        )
    return builder.build()
