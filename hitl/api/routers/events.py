"""/events: changes to the pending approvals as server-sent events (FastAPI's own SSE).

The stream: a `: hitl events` comment at once; `ready` once the feed has read the
pending set (from then on every change is reported: a client reloads its listing
then); then `approval.pending`, `approval.updated`, `approval.decided` and
`approval.timed_out`, each with an `ApprovalEvent` as JSON data and a numbered id; a
`: keepalive` comment after 10 s without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.sse import EventSourceResponse, ServerSentEvent

from hitl.api.deps import Credentials, State, Who
from hitl.api.errors import ApiError, responses
from hitl.api.schemas import ApprovalEvent
from hitl.reviewers import ReviewerConfig

KEEPALIVE_SECONDS = 10.0
"""A comment after this long without an event: a closed connection shows on the write,
and a token replaced meanwhile ends the stream."""
RECONNECT_MS = 2000
"""What `ready` tells an `EventSource` to wait before reconnecting (the inbox's own wait)."""

router = APIRouter(tags=["events"])


@router.get(
    "/events",
    summary="Server-sent events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "text/event-stream: `ready`, then `approval.pending`, "
            "`approval.updated`, `approval.decided`, `approval.timed_out`, each with an "
            "ApprovalEvent as JSON data",
        },
        # A refusal comes before the stream, as JSON like every other.
        401: {
            "description": responses(401)[401]["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
)
async def stream_events(
    state: State, who: Who, credentials: Credentials
) -> AsyncIterator[ServerSentEvent]:
    """Changes to the pending approvals as they happen (polled every 0.5 s), for the tools
    this reviewer may read. Read it with `fetch` (the token goes in the Authorization
    header, never in the URL)."""
    feed = state.feed
    token = credentials.credentials if credentials is not None else ""

    def current() -> ReviewerConfig | None:
        """The reviewers file as it is now, read once per event; None: it can't be read."""
        try:
            return state.config
        except ApiError:
            return None

    def still_theirs(config: ReviewerConfig | None) -> bool:
        """The token still names the reviewer who opened the stream: a token removed or
        replaced in the reviewers file ends the stream at its next event or keepalive."""
        if who.name is None:
            return True
        if config is None:
            return False  # the reviewers file can't be read: fail closed
        found = config.by_token(token)
        return found is not None and found.name == who.name

    def shown(event: ApprovalEvent, config: ReviewerConfig | None) -> bool:
        """Events about approvals of tools the reviewer may not read are not theirs to see."""
        return config is not None and who.may_read(config, event.tool)

    queue = feed.subscribe()
    try:
        yield ServerSentEvent(comment="hitl events")
        await feed.ready.wait()
        yield ServerSentEvent(
            event="ready", data={"at": datetime.now(UTC).isoformat()}, retry=RECONNECT_MS
        )
        count = 0
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                if not still_theirs(current()):
                    return
                yield ServerSentEvent(comment="keepalive")
                continue
            config = current()
            if event is None or not still_theirs(config):
                return
            if not shown(event, config):
                continue
            count += 1
            yield ServerSentEvent(event=event.type, data=event, id=str(count))
    finally:
        feed.unsubscribe(queue)
